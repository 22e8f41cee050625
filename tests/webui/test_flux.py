"""A real Flux dev txt2img with our second pass, on Forge Neo (#24).

The checkpoint (tests/webui/make_checkpoint_flux.py) is Flux dev in Forge Neo's own layout: a reduced
transformer (Forge Neo reads its width and depth from the file), and the real-size VAE, CLIP-L and
T5-XXL (in fp8), random weights. Forge Neo's Flux engine, its sampler, its text encoders and its
VAE run it as they run a downloaded Flux dev; the pictures are noise. Forge main sizes every Flux file
at 12 B parameters, so there these tests skip (its wiring: test_model_families.py). It runs last on
its host (tests/webui/conftest.py): 7 GiB resident, about 1.5 minutes a request here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness import ESRGAN_NAME, decode, flux_checkpoint
from test_webui import txt2img

from hires_upscale.infotext import parse_parameters
from hires_upscale.resolution import PRESETS

pytestmark = pytest.mark.smoke

RECORDER = "hires upscale test recorder"
#: what Forge's flux preset uses: CFG 1 (Flux dev is guidance-distilled), Euler, Simple (with the sampler's
#: automatic schedule this random model's first pass comes out NaN, black, from 2 steps on; Simple is fine)
FLUX_JOB = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64,
            "sampler_name": "Euler", "scheduler": "Simple", "seed": 1234, "cfg_scale": 1, "distilled_cfg_scale": 2.5}


@pytest.fixture(scope="module")
def flux(webui):
    path, why_not = flux_checkpoint(webui)
    if path is None:
        pytest.skip(why_not)
    assert webui.post("/sdapi/v1/refresh-checkpoints", {}).status == 200
    title = next(m["title"] for m in webui.get("/sdapi/v1/sd-models").json() if m["title"].startswith(path.stem))
    txt2img(webui, steps=1)  # a WebUI that has loaded no checkpoint yet names none to go back to
    before = webui.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    assert webui.post("/sdapi/v1/options", {"sd_model_checkpoint": title}).status == 200
    try:
        yield title
    finally:
        webui.post("/sdapi/v1/options", {"sd_model_checkpoint": before})
        txt2img(webui, steps=1)  # Forge Neo loads the one put back at the next job


def hires(webui, **params) -> tuple[dict, dict[str, str]]:
    args = {"enabled": True, "upscaler": ESRGAN_NAME, "scale": 2, "denoise": 0.3, "hires_steps": 2, **params}
    result = txt2img(webui, **FLUX_JOB, alwayson_scripts={"hires upscale": {"args": [args]}, RECORDER: {"args": [""]}})
    return result, parse_parameters(json.loads(result["info"])["infotexts"][0]).fields


def test_a_flux_txt2img_reaches_the_target_with_both_passes_distilled_cfg_and_flux_presets(webui, flux):
    webui.recorded()
    result, fields = hires(webui, tiled="on")
    image = decode(result["images"][0])
    assert image.size == (128, 128)
    assert np.asarray(image.convert("L"), float).std() > 1  # no NaN: a picture, not a flat colour
    assert (fields["Model"], fields["Distilled CFG Scale"], fields["Hires upscale distilled cfg"]) == (
        flux.split(" ")[0].removesuffix(".safetensors"), "2.5", "2.5")
    [inner] = [r for r in webui.recorded() if r["hook"] == "process" and r["inner"]]
    assert (inner["engine"], inner["distilled_cfg"], inner["cfg"]) == ("Flux", 2.5, 1.0)
    # tiled mode asked for, and refused with its reason: the pass ran full frame
    assert "tiled mode is not available for flux on this host" in fields["Hires upscale notes"]
    options = webui.get("/hires-upscale/v1/options").json()
    assert options["model_family"] == "flux"
    assert options["presets"]["flux"] == [p.as_dict() for p in PRESETS["flux"]]


def test_the_hires_distilled_cfg_overrides_the_first_pass_one(webui, flux):
    webui.recorded()
    result, fields = hires(webui, distilled_cfg=4)
    assert decode(result["images"][0]).size == (128, 128)
    assert (fields["Distilled CFG Scale"], fields["Hires upscale distilled cfg"]) == ("2.5", "4")
    [inner] = [r for r in webui.recorded() if r["hook"] == "process" and r["inner"]]
    assert inner["distilled_cfg"] == 4.0
