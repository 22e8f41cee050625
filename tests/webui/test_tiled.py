"""The tiled (low-VRAM) second pass and its out-of-memory fallback in the real WebUI.

Out-of-memory errors and interrupts come from the test extension beside ours
(tests/webui/faults_extension), which raises CUDA's own error type where the WebUI's
UNet or VAE decoder would run out of memory on a small card.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness import ESRGAN_NAME, decode, image_b64, psnr
from PIL import Image, PngImagePlugin
from test_webui import BASE, script_args, txt2img

from hires_upscale.infotext import parse_parameters

SOURCE = 256
TARGET = 512


def existing_picture(size: int = SOURCE) -> str:
    """A square WebUI-style PNG with its parameters text (made without a first pass: cheaper)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([np.sin(6 * xx), np.cos(5 * yy), xx - yy], axis=-1) * 100 + 128
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nNegative prompt: blurry\n"
                                f"Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 1234, Size: {size}x{size}")
    return image_b64(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), pnginfo=info)


def upscale(webui, source: int = SOURCE, **params) -> dict:
    reply = webui.post("/hires-upscale/v1/upscale", {
        "images": [existing_picture(source)],
        "params": {"upscaler": "Lanczos", "scale": 2, "hires_steps": 2, "denoise": 0.3, **params},
    })
    assert reply.status == 200, (reply.body, webui.log_tail())
    return reply.json()["images"][0]


@pytest.fixture(autouse=True)
def no_faults_left(webui):
    webui.inject()
    yield
    webui.inject()


@pytest.mark.opt_in("about 2.5 minutes on Forge's CPU path; in CI Forge's tiled pass is checked by the SDXL tiled "
                    "tests and the out-of-memory retry", hosts=("forge",))
@pytest.mark.reliability(area="Low VRAM", tried="a tiled second pass (VAE and UNet, 3x3 tiles) at 256 -> 512",
                         expected="same size and infotext as untiled, close to its picture")
def test_a_tiled_second_pass_gives_what_untiled_gives(webui):
    untiled = upscale(webui, tiled="off")
    tiled = upscale(webui, tiled="on", tile_size=256)
    assert (tiled["width"], tiled["height"]) == (untiled["width"], untiled["height"]) == (TARGET, TARGET)
    ours = ("Hires upscale tiled", "Hires upscale tile size")
    fields = {k: v for k, v in parse_parameters(tiled["infotext"]).fields.items() if k not in ours}
    assert fields == {k: v for k, v in parse_parameters(untiled["infotext"]).fields.items() if k not in ours}
    assert "Hires upscale to" in fields and "Seed" in fields
    assert parse_parameters(tiled["infotext"]).fields["Hires upscale tiled"] == "on"
    assert not [w for w in tiled["warnings"] if w["level"] == "warning"], tiled["warnings"]
    # Random weights: the UNet's tiles see less than the whole picture, so close, not equal.
    assert psnr(decode(tiled["image"]), decode(untiled["image"])) > 20


@pytest.mark.opt_in("Forge's untiled 768 px pass alone takes about 6 minutes on a CPU; in CI its UNet tiles are shown "
                    "by the out-of-memory retry, which only a really tiled pass gets through", hosts=("forge",))
@pytest.mark.reliability(area="Low VRAM", tried="a tiled second pass at 384 -> 768, its model calls watched",
                         expected="every UNet call and VAE tile smaller than the picture, the UNet's tiles batched "
                         "4 to a call each step; untiled: one whole-frame call each step")
def test_the_tiled_pass_really_runs_in_tiles(webui):
    """What `tiled: on` does, seen where the model runs (the recorder's shape hooks), not in our own
    infotext: 768 px is a 96x96 latent; tiles of 256 px are 32x32 latents, 8 apart: 4x4 tiles of 30
    (tiling.fitted_grid), 4 per UNet call, so 4 calls per sampling step. Forge tiles the VAE itself at
    512 px, so its tiles are seen there too at this size."""
    steps, latent = 2, 768 // 8
    webui.recorded()
    webui.watch(True)
    try:
        tiled = upscale(webui, source=384, tiled="on", tile_size=256, hires_steps=steps)
        calls = webui.recorded()
        untiled = upscale(webui, source=384, tiled="off", hires_steps=steps)
        whole = webui.recorded()
    finally:
        webui.watch(False)
    assert (tiled["width"], untiled["width"]) == (768, 768)

    def shapes(record: list[dict], hook: str) -> list[list[int]]:
        return [entry["shape"] for entry in record if entry["hook"] == hook]

    unet, full_frame = shapes(calls, "unet"), shapes(whole, "unet")
    assert unet and {tuple(shape[-2:]) for shape in unet} == {(30, 30)}, unet
    # each whole-frame call became 16 tiles, 4 to a call (a host may split cond and uncond: both ways alike)
    assert full_frame and {tuple(shape[-2:]) for shape in full_frame} == {(latent, latent)}, full_frame
    assert len(full_frame) % steps == 0 and len(unet) == 4 * len(full_frame), (len(unet), len(full_frame))
    for hook in ("vae encoder", "vae decoder"):
        seen = [max(shape[-2:]) for shape in shapes(calls, hook)]
        full = 768 if hook == "vae encoder" else latent
        assert any(side < full for side in seen), (hook, seen)  # tiles, not only the whole picture
        assert all(side == full for side in (max(s[-2:]) for s in shapes(whole, hook))), (hook, whole)


@pytest.mark.reliability(area="Low VRAM", tried="out of memory in the second pass's UNet, tiled: auto",
                         expected="runs again tiled, says so once, finishes at the target size")
def test_out_of_memory_in_the_unet_retries_tiled_and_says_so(webui):
    """On Forge too: there the tiles go through its UNet patcher's model-function wrapper."""
    # Every full-frame UNet call runs out: only a really tiled retry gets through.
    webui.inject({"kind": "oom", "stage": "unet", "min_pixels": TARGET * TARGET, "times": 100})
    result = upscale(webui, tiled="auto", tile_size=256)
    assert webui.faults_left()[0]["times"] == 99  # fired once, then the tiles stayed below it
    assert (result["width"], result["height"]) == (TARGET, TARGET)
    assert [w["code"] for w in result["warnings"] if w["code"] == "tiled_after_oom"] == ["tiled_after_oom"]
    assert "ran out of memory at 512x512" in next(w["message"] for w in result["warnings"]
                                                     if w["code"] == "tiled_after_oom")


@pytest.mark.reliability(area="Low VRAM", tried="out of memory in the VAE decode of the second pass, tiled: off",
                         expected="507 naming the stage and what to change; the next job runs")
def test_out_of_memory_with_tiling_off_fails_clearly_and_the_webui_goes_on(webui):
    # Forge catches an out-of-memory VAE decode and decodes again tiled itself (backend/patcher/vae.py),
    # so there the error that reaches us comes from the UNet.
    stage = "unet" if webui.kind == "forge" else "vae decode"
    webui.inject({"kind": "oom", "stage": stage, "min_pixels": TARGET * TARGET})
    reply = webui.post("/hires-upscale/v1/upscale", {
        "images": [existing_picture()],
        "params": {"upscaler": "Lanczos", "scale": 2, "hires_steps": 1, "tiled": "off"},
    })
    assert reply.status == 507, reply.body
    assert reply.json()["detail"][0]["type"] == "out_of_memory"
    message = reply.json()["detail"][0]["msg"]
    assert "second pass ran out of memory at 512x512" in message
    assert "set Tiled to auto or on" in message
    after = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args()}})
    assert decode(after["images"][0]).size == (128, 128)


@pytest.mark.reliability(area="Low VRAM", tried="out of memory in a txt2img's second pass (VAE decode), tiled: auto",
                         expected="the generation finishes at the target size, tiled, with a note")
def test_out_of_memory_in_a_generation_still_finishes(webui):
    # (at 128x128 a "tile" is the whole latent: this is the retry of the generation path; the tiling
    # itself is what the test above proves.) Forge decodes again tiled itself after an out-of-memory
    # VAE decode (backend/patcher/vae.py), so there the error that reaches us comes from the UNet.
    stage = "unet" if webui.kind == "forge" else "vae decode"
    webui.inject({"kind": "oom", "stage": stage, "min_pixels": 128 * 128})
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args(upscaler=ESRGAN_NAME)}})
    assert webui.faults_left() == []
    assert decode(result["images"][0]).size == (128, 128)
    assert "Hires upscale error" not in result["info"]
    notes = parse_parameters(json.loads(result["info"])["infotexts"][0]).fields["Hires upscale notes"]
    assert "ran out of memory at 128x128; it ran again tiled" in notes


@pytest.mark.reliability(area="Faults", tried="interrupt during the second pass of a txt2img",
                         expected="200 with the upscaled image, said in its infotext; the next job runs")
def test_an_interrupt_in_the_second_pass_keeps_the_upscaled_image(webui):
    webui.inject({"kind": "interrupt", "stage": "sampling", "min_pixels": 128 * 128})
    reply = webui.post("/sdapi/v1/txt2img", {**BASE, "alwayson_scripts": {
        "hires upscale": {"args": script_args(hires_steps=4)}}})
    assert reply.status == 200, (reply.body, webui.log_tail())
    assert webui.faults_left() == []
    image = decode(reply.json()["images"][0])
    assert image.size == (128, 128)
    assert parse_parameters(image.text["parameters"]).fields["Hires upscale interrupted"] == "after upscale"
    # the pixels are the upscaled image's, not a half-denoised decode: the same first pass, upscaled only
    first = txt2img(webui)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(first["info"])["infotexts"][0])
    only = webui.post("/hires-upscale/v1/upscale", {"images": [image_b64(decode(first["images"][0]), pnginfo=info)],
                                                    "params": {"upscaler": ESRGAN_NAME, "denoise": 0}})
    assert only.status == 200, only.body
    assert psnr(image, decode(only.json()["images"][0]["image"])) > 50
    after = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args()}})
    assert decode(after["images"][0]).size == (128, 128)
    assert "Hires upscale interrupted" not in decode(after["images"][0]).text["parameters"]


def forge_only(webui) -> None:
    if webui.kind != "forge":
        pytest.skip("Forge's own built-in extension (A1111 has none of that name)")


def test_forges_multidiffusion_integrated_in_the_pass_is_said_to_replace_our_unet_tiles(webui):
    forge_only(webui)
    # an overlap below the first pass's 64 px: Forge's MultiDiffusion divides by zero on no tiles
    multidiffusion = [True, "MultiDiffusion", 256, 256, 32, 4]
    result = txt2img(webui, alwayson_scripts={"MultiDiffusion Integrated": {"args": multidiffusion},
                                              "hires upscale": {"args": script_args(tiled="on")}})
    assert decode(result["images"][0]).size == (128, 128)
    notes = parse_parameters(json.loads(result["info"])["infotexts"][0]).fields["Hires upscale notes"]
    assert "ran through another extension's wrapper, not this extension's tiles" in notes
    assert "Hires upscale error" not in result["info"]


def test_forges_never_oom_integrated_and_our_tiled_pass_run_together(webui):
    forge_only(webui)
    never_oom = [False, True]  # UNet offload off, VAE always tiled
    # 128 px first: Forge's own tiled VAE fails on an 8x8 latent ("start (64) + length (1) exceeds ...")
    result = txt2img(webui, width=128, height=128,
                     alwayson_scripts={"Never OOM Integrated": {"args": never_oom},
                                       "hires upscale": {"args": script_args(tiled="on")}})
    assert decode(result["images"][0]).size == (256, 256)
    fields = parse_parameters(json.loads(result["info"])["infotexts"][0]).fields
    assert fields["Hires upscale tiled"] == "on" and "Hires upscale error" not in fields
    assert "another extension's wrapper" not in fields.get("Hires upscale notes", "")
    # and after it, with Never OOM off again, a plain generation is untouched by either
    assert decode(txt2img(webui, alwayson_scripts={"Never OOM Integrated": {"args": [False, False]}})
                  ["images"][0]).size == (64, 64)
