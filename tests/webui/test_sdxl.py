"""SDXL, the family most checkpoints people run belong to, on a random-weight full-size checkpoint.

At tiny sizes (64 -> 128) for the txt2img runs; the tiled UNet is also run where it really cuts the
latent into tiles (192 -> 384, 2x2 tiles), since SDXL's vector conditioning (`y`: pooled text, size and
crop coordinates) must reach every tile. One checkpoint is loaded at a time (the WebUI's default limit
of 1): SDXL replaces SD1.5 for this module, and SD1.5 is loaded again after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from harness import SDXL_CHECKPOINT, decode, psnr, sdxl_checkpoint
from test_second_pass import infotext
from test_tiled import upscale
from test_webui import script_args, txt2img

from hires_upscale.resolution import PRESETS

TILED_FIELDS = ("Hires upscale tiled", "Hires upscale tile size")


@pytest.fixture(scope="module")
def sdxl(webui):
    path, why_not = sdxl_checkpoint(webui)
    if path is None:
        pytest.skip(why_not)
    assert webui.post("/sdapi/v1/refresh-checkpoints", {}).status == 200
    titles = [m["title"] for m in webui.get("/sdapi/v1/sd-models").json()]
    title = next(t for t in titles if t.startswith(SDXL_CHECKPOINT))
    txt2img(webui, steps=1)  # a WebUI that has loaded no checkpoint yet names none to go back to
    options = webui.get("/sdapi/v1/options").json()
    before = {key: options[key] for key in ("sd_model_checkpoint", "live_previews_enable") if key in options}
    # A1111's live previews ("Approx NN") download SDXL's preview model on first use: offline here.
    reply = webui.post("/sdapi/v1/options", {"sd_model_checkpoint": title, "live_previews_enable": False})
    assert reply.status == 200, (reply.body, webui.log_tail())
    txt2img(webui, steps=1)  # Forge loads a newly chosen checkpoint at the next generation, not before
    try:
        yield title
    finally:
        webui.post("/sdapi/v1/options", before)
        txt2img(webui, steps=1)  # and Forge loads the one put back now, not inside the next module's first job


def hires(webui, **values) -> dict:
    return txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args(scale=2, **values)}})


def test_the_family_is_sdxl_and_its_presets_are_offered(webui, sdxl):
    options = webui.get("/hires-upscale/v1/options").json()
    assert options["model_family"] == "sdxl"
    assert options["presets"]["sdxl"] == [p.as_dict() for p in PRESETS["sdxl"]]
    assert options["families"]["sdxl"]["base"] == 1024


def test_txt2img_with_the_script_untiled(webui, sdxl):
    result = hires(webui, tiled="off")
    image = decode(result["images"][0])
    assert image.size == (128, 128)
    assert np.asarray(image.convert("L"), float).std() > 1  # no NaN: a picture, not a flat colour
    fields = infotext(result).fields
    assert fields["Model"] == SDXL_CHECKPOINT and fields["Hires upscale to"] == "128x128"
    assert "Hires upscale error" not in fields, fields


def test_txt2img_with_the_script_tiled(webui, sdxl):
    untiled, tiled = hires(webui, tiled="off"), hires(webui, tiled="on")
    assert decode(tiled["images"][0]).size == (128, 128)
    fields = {k: v for k, v in infotext(tiled).fields.items() if k not in TILED_FIELDS}
    assert fields == {k: v for k, v in infotext(untiled).fields.items() if k not in TILED_FIELDS}
    assert infotext(tiled).fields["Hires upscale tiled"] == "on"


def test_the_tiled_unet_gives_each_tile_the_vector_conditioning(webui, sdxl):
    """SDXL's `y` describes the whole picture (its size, no crop), so every tile gets it unchanged,
    as the full-frame pass does; a tile told it is a crop would be painted as one."""
    untiled = upscale(webui, source=192, tiled="off")
    tiled = upscale(webui, source=192, tiled="on", tile_size=256)  # a 48x48 latent in 2x2 tiles of 28
    assert (tiled["width"], tiled["height"]) == (untiled["width"], untiled["height"]) == (384, 384)
    # A call that could not be tiled says so ("ran full frame"); there must be none.
    assert not [w for w in tiled["warnings"] if w["level"] == "warning"], tiled["warnings"]
    assert psnr(decode(tiled["image"]), decode(untiled["image"])) > 20
