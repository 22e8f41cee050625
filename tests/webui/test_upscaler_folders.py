"""Every spandrel family the WebUI lists, from the folder a user puts it in, on our engine."""

from __future__ import annotations

import pytest
from harness import FAMILY_MODELS, FamilyModel, decode, image_b64, webui_png
from pictures import noise_image
from test_results import hires
from test_second_pass import infotext
from test_webui import txt2img

from hires_upscale import calibration
from hires_upscale.upscaler import image_to_tensor, load_model


@pytest.fixture(scope="module")
def first_pass(webui):
    """A 64x64 txt2img result with its parameters, as a WebUI PNG."""
    return webui_png(txt2img(webui))


def listed(webui, entry: FamilyModel) -> dict:
    """The options, the family's model among the upscalers; a skip only where the host has no such folder
    (A1111 before v1.8 had no HAT or DAT upscaler): anywhere else a missing model is a failure."""
    options = webui.get("/hires-upscale/v1/options").json()
    if entry.folder in ("HAT", "DAT") and webui.kind == "a1111" and before_v1_8(webui.version):
        pytest.skip(f"WebUI {webui.version} has no {entry.folder} upscaler (A1111's HAT and DAT folders arrived "
                    "in v1.8)")
    assert entry.upscaler in options["upscalers"], (entry, options["upscalers"])
    return options


def before_v1_8(version: str) -> bool:
    """Whether an A1111 version string ("v1.6.0", "v1.7.0-RC-5-gabc") is older than v1.8."""
    import re

    match = re.match(r"v(\d+)\.(\d+)", version)
    return bool(match) and (int(match.group(1)), int(match.group(2))) < (1, 8)


def test_the_serve_setting_covers_a_built_in_extensions_upscaler_too(webui):
    """SwinIR's upscaler class is defined by a built-in extension's script, not in modules/: with the
    setting on, the WebUI's own Extras runs that file on our engine. First in this module, so the file
    is not loaded yet and the engine says so when it loads it."""
    entry = next(e for e in FAMILY_MODELS if e.family == "SwinIR")
    listed(webui, entry)
    assert webui.post("/sdapi/v1/options", {"hires_upscale_serve_webui": True}).status == 200
    try:
        webui.recorded()
        reply = webui.post("/sdapi/v1/extra-single-image", {
            "image": image_b64(noise_image(40, 40, seed=21)), "upscaler_1": entry.upscaler,
            "upscaling_resize": 4, "resize_mode": 0})
        assert reply.status == 200, (reply.body, webui.log_tail())
        assert decode(reply.json()["image"]).size == (160, 160)
        said = [r["message"] for r in webui.recorded() if r["hook"] == "log"]
        assert any(f"{entry.file}: SwinIR " in line for line in said), said
        assert not any("using the WebUI's upscaler" in line for line in said), said  # no fallback
    finally:
        webui.post("/sdapi/v1/options", {"hires_upscale_serve_webui": False})


@pytest.mark.parametrize("entry", FAMILY_MODELS, ids=lambda e: f"{e.family}-{e.folder}")
def test_each_family_runs_on_our_engine_from_its_webui_folder(webui, first_pass, entry):
    options = listed(webui, entry)
    assert entry.upscaler in options["engine_upscalers"], options["engine_upscalers"]
    webui.recorded()
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [first_pass],
                                                    "params": {"upscaler": entry.upscaler, "scale": 2, "denoise": 0}})
    assert reply.status == 200, (reply.body, webui.log_tail())
    result = decode(reply.json()["images"][0]["image"]).convert("RGB")
    assert result.size == (128, 128)
    # What the engine in the WebUI said when it loaded the file (in this test, or in an earlier one
    # that used the same model): its architecture, precision, memory.
    webui.recorded()
    said = [message for message in webui.engine_said if f"{entry.file}: " in message]
    assert said and f"{entry.file}: {entry.family} " in said[0], said
    # The same file on our engine here gives the same picture (in fp32, or in the precision it kept).
    source = decode(first_pass).convert("RGB")
    path = webui.model_path(entry)
    here = [load_model(path, device="cpu", precision=precision).upscale(source, (128, 128))
            for precision in ("fp32", "auto")]
    assert max(calibration.psnr(image_to_tensor(result), image_to_tensor(image)) for image in here) >= 45


@pytest.mark.parametrize("entry", [e for e in FAMILY_MODELS if e.family in ("SwinIR", "HAT", "DAT")],
                         ids=lambda e: e.family)
def test_a_transformer_family_upscales_a_txt2img_with_its_second_pass(webui, entry):
    listed(webui, entry)
    result = hires(webui, entry.upscaler, scale=2)
    assert decode(result["images"][0]).size == (128, 128)
    fields = infotext(result).fields
    assert fields["Hires upscale upscaler"] == entry.upscaler and fields["Hires upscale to"] == "128x128"
    assert "Hires upscale error" not in fields
