"""The opt-in setting that serves the WebUI's own ESRGAN upscaler (Extras etc.) with our engine."""

from __future__ import annotations

import pytest
from harness import ESRGAN_NAME, decode, image_b64, psnr
from pictures import noise_image
from PIL import Image

from hires_upscale.upscaler import load_model


def extras(webui, image: Image.Image) -> Image.Image:
    reply = webui.post("/sdapi/v1/extra-single-image", {
        "image": image_b64(image), "upscaler_1": ESRGAN_NAME, "upscaling_resize": 2, "resize_mode": 0})
    assert reply.status == 200, (reply.body, webui.log_tail())
    return decode(reply.json()["image"])


@pytest.fixture
def serve_setting(webui):
    def set_to(value: bool) -> None:
        reply = webui.post("/sdapi/v1/options", {"hires_upscale_serve_webui": value})
        assert reply.status == 200, reply.body

    yield set_to
    set_to(False)


def test_extras_gives_the_same_size_and_runs_our_engine_only_when_asked(webui, serve_setting):
    # Our engine, here, on the same model: the reference the served output must match.
    ours = load_model(webui.esrgan_dir / f"{ESRGAN_NAME}.pth", device="cpu")

    def engine_result(image: Image.Image) -> Image.Image:
        native = ours.upscale(image, (image.width * 4, image.height * 4))
        return native.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)

    # The Extras tab caches results per image, so every call sends a new one.
    off_input, on_input = noise_image(64, 48, seed=11), noise_image(64, 48, seed=12)
    serve_setting(False)
    off = extras(webui, off_input)
    serve_setting(True)
    on = extras(webui, on_input)
    assert off.size == on.size == (128, 96)
    # Served: our engine's output (the same code on the same CPU: equal up to rounding).
    assert psnr(on, engine_result(on_input)) >= 50
    # Not served: the WebUI's own path (192 px tiles, BGR order, fp32) gives another picture.
    assert psnr(off, engine_result(off_input)) < 45
