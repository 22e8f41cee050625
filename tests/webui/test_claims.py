"""README's claims that no other test would see break, each checked where it happens: what the second
pass ran with (the recorder extension's record of the host's own processing objects), which batch ran
one image at a time, what was saved, what a mask keeps, what Skip leaves, which refiner ran where."""

from __future__ import annotations

import json

import pytest
from harness import ESRGAN_NAME, SECOND_CHECKPOINT, decode, image_b64, psnr
from PIL import Image, PngImagePlugin
from test_second_pass import RECORDER
from test_webui import BASE, script_args, txt2img

from hires_upscale.infotext import parse_parameters


def inner(record: list[dict], hook: str = "process") -> list[dict]:
    return [entry for entry in record if entry["hook"] == hook and entry["inner"]]


def outer(record: list[dict], hook: str = "process") -> list[dict]:
    return [entry for entry in record if entry["hook"] == hook and not entry["inner"]]


@pytest.mark.reliability(area="WebUI", tried="the second pass's sampler, schedule, steps and CFG overrides",
                         expected="the host's img2img of the second pass runs with them; the first pass as asked")
def test_the_overrides_are_what_the_second_pass_runs_with(webui):
    schedulers = webui.get("/sdapi/v1/schedulers")
    scheduler = "Karras" if schedulers.status == 200 else ""  # a schedule type of its own from v1.9
    webui.recorded()
    txt2img(webui, alwayson_scripts={RECORDER: {"args": [""]}, "hires upscale": {"args": [
        {"upscaler": ESRGAN_NAME, "sampler": "Euler a", "scheduler": scheduler, "hires_steps": 3, "cfg_scale": 4}]}})
    record = webui.recorded()
    [first], [second] = outer(record), inner(record)
    assert (first["sampler"], first["steps"], first["cfg"]) == ("Euler", 2, 7)
    assert (second["sampler"], second["steps"], second["cfg"], second["size"]) == ("Euler a", 3, 4, [128, 128])
    if scheduler:
        assert second["scheduler"] == scheduler


@pytest.mark.reliability(area="Low VRAM", tried="a batch of 2 whose one second pass runs out of memory (injected "
                         "where a call holds both images)", expected="each image runs on its own and is upscaled; "
                         "the notes say the batch ran one at a time")
def test_a_batch_that_runs_out_of_memory_runs_one_image_at_a_time(webui):
    # both images' cond and uncond rows in one UNet call: 4 rows; one image alone: 2
    webui.inject({"kind": "oom", "stage": "unet", "min_pixels": 128 * 128, "min_batch": 4, "times": 100})
    try:
        result = txt2img(webui, batch_size=2, alwayson_scripts={"hires upscale": {"args": script_args()}})
    finally:
        fired = 100 - webui.faults_left()[0]["times"]
        webui.inject()
    assert fired == 1  # the batch once; then each image alone, under the injected size
    assert [decode(data).size for data in result["images"]] == [(128, 128)] * 2
    for text in json.loads(result["info"])["infotexts"]:
        notes = parse_parameters(text).fields["Hires upscale notes"]
        assert "The batch's second pass ran out of memory at 2x 128x128; its images ran one at a time." in notes


@pytest.mark.reliability(area="WebUI", tried="the setting 'Also save each image before its hires upscale'",
                         expected="the WebUI saves both: the first pass with -before-hires-upscale, and the result")
def test_the_first_pass_is_saved_too_when_the_setting_says_so(webui):
    assert webui.post("/sdapi/v1/options", {"hires_upscale_save_first_pass": True, "samples_save": True}).status == 200
    try:
        txt2img(webui, seed=8642, save_images=True, alwayson_scripts={"hires upscale": {"args": script_args()}})
    finally:
        webui.post("/sdapi/v1/options", {"hires_upscale_save_first_pass": False})
    saved = sorted((webui.data_dir / "outputs").rglob("*-8642*.png"))
    sizes = {path.name: Image.open(path).size for path in saved}
    before = [name for name in sizes if name.endswith("-before-hires-upscale.png")]
    assert len(before) == 1 and sizes[before[0]] == (64, 64), sizes
    assert sorted(sizes.values()) == [(64, 64), (128, 128)], sizes


@pytest.mark.reliability(area="WebUI", tried="img2img with a mask, upscale only (denoise 0)",
                         expected="the composited picture is upscaled: outside the mask, the original's pixels "
                         "upscaled; inside, the newly painted ones")
def test_inpainting_upscales_the_composited_picture(webui):
    """Lanczos, not a random model: a random ESRGAN's output hardly depends on its input, so only a
    faithful resize tells which picture went in."""
    if webui.kind == "a1111" and webui.version.startswith(("v1.6", "v1.7")):
        pytest.skip("the composited image reaches extensions from v1.8 (postprocess_image_after_composite)")
    source = decode(txt2img(webui, seed=31)["images"][0]).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # the right half is painted again
    inpaint = {**BASE, "seed": 97, "init_images": [image_b64(source)], "mask": image_b64(mask),
               "denoising_strength": 0.9, "inpainting_fill": 1, "inpaint_full_res": False, "mask_blur": 0}
    plain = webui.post("/sdapi/v1/img2img", inpaint)  # the host's own composited result
    reply = webui.post("/sdapi/v1/img2img", {**inpaint, "alwayson_scripts": {
        "hires upscale": {"args": [{"upscaler": "Lanczos", "denoise": 0}]}}})
    assert plain.status == reply.status == 200, (plain.body, reply.body)
    result = decode(reply.json()["images"][0]).convert("RGB")
    assert result.size == (128, 128)

    def upscaled(image: Image.Image) -> Image.Image:
        only = webui.post("/hires-upscale/v1/upscale", {"images": [_with_info(image)],
                                                        "params": {"upscaler": "Lanczos", "denoise": 0}})
        assert only.status == 200, only.body
        return decode(only.json()["images"][0]["image"]).convert("RGB")

    # the composited picture upscaled: the kept half as the original (not its VAE round trip), the
    # painted half as painted
    assert psnr(result, upscaled(decode(plain.json()["images"][0]).convert("RGB"))) > 40
    painted = (72, 0, 128, 128)  # away from the seam Lanczos blends across
    assert psnr(result.crop(painted), upscaled(source).crop(painted)) < 30  # not the init image


def _with_info(image: Image.Image) -> str:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 31, Size: 64x64")
    return image_b64(image, pnginfo=info)


@pytest.mark.reliability(area="Faults", tried="Skip pressed during the second pass of a txt2img",
                         expected="the upscaled image, said in its infotext, as for Interrupt; the next job runs")
def test_skip_in_the_second_pass_keeps_the_upscaled_image(webui):
    webui.inject({"kind": "skip", "stage": "sampling", "min_pixels": 128 * 128})
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args(hires_steps=4)}})
    assert webui.faults_left() == []
    image = decode(result["images"][0])
    assert image.size == (128, 128)
    assert parse_parameters(image.text["parameters"]).fields["Hires upscale interrupted"] == "after upscale"
    after = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args()}})
    assert "Hires upscale interrupted" not in decode(after["images"][0]).text["parameters"]


@pytest.mark.parametrize("which", ["second pass", "first pass"])
@pytest.mark.reliability(area="WebUI", tried="a refiner with 'Hires fix: which pass to enable refiner for'",
                         expected="it runs in the pass the setting names, as in the built-in Hires fix, and the "
                         "result says so when it is the second")
def test_the_refiner_runs_in_the_pass_the_setting_names(webui, which):
    if webui.kind == "forge":
        pytest.skip("Forge has no refiner switch in its processing (refiner_checkpoint is ignored there)")
    assert webui.post("/sdapi/v1/options", {"hires_fix_refiner_pass": which}).status == 200
    try:
        webui.recorded()
        result = txt2img(webui, steps=4, refiner_checkpoint=SECOND_CHECKPOINT, refiner_switch_at=0.5,
                         alwayson_scripts={RECORDER: {"args": [""]}, "hires upscale": {"args": script_args()}})
    finally:
        webui.post("/sdapi/v1/options", {"hires_fix_refiner_pass": "second pass"})
    loaded = [entry["checkpoint"] for entry in webui.recorded() if entry["hook"] == "model_loaded"]
    notes = parse_parameters(json.loads(result["info"])["infotexts"][0]).fields.get("Hires upscale notes", "")
    switched = any(SECOND_CHECKPOINT in str(title) for title in loaded)
    assert switched, loaded  # the refiner ran somewhere
    assert ("switched to the refiner" in notes) == (which == "second pass"), notes
