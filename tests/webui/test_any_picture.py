"""Every picture a user brings, through the real WebUI: the JPEG and WebP files the WebUI itself saves, a
photo with no generation info, another tool's PNG, and the ✨ button under the gallery."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import ESRGAN_NAME, decode, image_b64
from PIL import Image
from test_webui import BASE, txt2img

from hires_upscale.images import record_of
from hires_upscale.infotext import parse_parameters
from hires_upscale.metadata import read_generation

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
UPSCALE = "/hires-upscale/v1/upscale"


def opened(data: str) -> Image.Image:
    from hires_upscale.images import decode_base64_image

    return decode_base64_image(data)


@pytest.fixture
def saving_as(webui):
    """The WebUI saves its txt2img images in the given format (its samples_format setting), then as before."""
    before = webui.get("/sdapi/v1/options").json()
    chosen: list[str] = []

    def save_as(fmt: str) -> None:
        reply = webui.post("/sdapi/v1/options", {"samples_format": fmt, "samples_save": True})
        assert reply.status == 200, reply.body
        chosen.append(fmt)

    yield save_as
    webui.post("/sdapi/v1/options", {key: before[key] for key in ("samples_format", "samples_save")})


def saved_by_the_webui(webui, fmt: str, seed: int) -> Path:
    """The file the WebUI itself wrote for a txt2img with `seed`, in its outputs folder."""
    txt2img(webui, seed=seed, save_images=True)
    found = sorted((webui.data_dir / "outputs").rglob(f"*-{seed}*.{fmt}"), key=lambda p: p.stat().st_mtime)
    assert found, f"the WebUI saved no .{fmt} for seed {seed}: {list((webui.data_dir / 'outputs').rglob('*'))[:20]}"
    return found[-1]


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
@pytest.mark.reliability(area="WebUI", tried="a JPEG and a WebP the WebUI itself saved, through our route (a path "
                         "and base64), PNG out and the same format out",
                         expected="prompt and seed recovered from their EXIF; with output_format same, the same format "
                         "back with its infotext in EXIF")
def test_the_jpeg_and_webp_the_webui_saves_keep_their_prompt_and_seed(webui, saving_as, fmt):
    saving_as(fmt)
    path = saved_by_the_webui(webui, fmt, seed=5150)
    reply = webui.post(UPSCALE, {"paths": [str(path)], "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}})
    assert reply.status == 200, reply.body
    [done] = reply.json()["images"]
    info = parse_parameters(done["infotext"])
    assert (info.seed, info.prompt, done["format"]) == (5150, BASE["prompt"], "PNG")
    assert decode(done["image"]).size == (128, 128)
    same = webui.post(UPSCALE, {"images": [base64.b64encode(path.read_bytes()).decode()], "output_format": "same",
                                "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}})
    assert same.status == 200, same.body
    [back] = same.json()["images"]
    assert back["format"] == {"jpg": "JPEG", "webp": "WEBP"}[fmt]
    image = opened(back["image"])
    found = read_generation(record_of(image))
    assert (found.source, found.info.seed) == ("EXIF UserComment", 5150)
    assert "Hires upscale to: 128x128" in found.text


@pytest.mark.reliability(area="WebUI", tried="a photo with no generation info: denoise 0, then a typed prompt at 0.3, "
                         "then no prompt at 0.3", expected="each upscaled; the seed, steps, sampler and checkpoint the "
                         "WebUI's defaults gave are named in the notes; a pass without prompt is said")
def test_a_photo_with_no_info_is_upscaled_and_what_was_decided_is_said(webui):
    photo = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(photo, "JPEG", quality=90)
    data = base64.b64encode(photo.getvalue()).decode()
    only = webui.post(UPSCALE, {"images": [data], "params": {"upscaler": ESRGAN_NAME, "denoise": 0}})
    assert only.status == 200, only.body
    assert decode(only.json()["images"][0]["image"]).size == (128, 128)
    typed = webui.post(UPSCALE, {"images": [data], "params": {"upscaler": ESRGAN_NAME, "denoise": 0.3,
                                                               "hires_steps": 1, "prompt": "a grey stone wall"}})
    assert typed.status == 200, typed.body
    [done] = typed.json()["images"]
    codes = [w["code"] for w in done["warnings"]]
    assert "image_defaults" in codes and "no_prompt" not in codes
    defaults = next(w["message"] for w in done["warnings"] if w["code"] == "image_defaults")
    assert "seed " in defaults and "sampler " in defaults and "the loaded checkpoint random-sd15" in defaults
    assert "Hires upscale notes:" in done["infotext"]
    bare = webui.post(UPSCALE, {"images": [data], "params": {"upscaler": ESRGAN_NAME, "denoise": 0.3,
                                                              "hires_steps": 1}})
    assert bare.status == 200, bare.body
    assert "no_prompt" in [w["code"] for w in bare.json()["images"][0]["warnings"]]


@pytest.mark.reliability(area="WebUI", tried="a ComfyUI PNG (its 'prompt' graph) through our route",
                         expected="its prompt and seed come back, and the notes say from which node")
def test_a_comfyui_png_gives_its_prompt_back(webui):
    from test_metadata import comfy_graph

    graph = comfy_graph()
    graph["3"]["inputs"]["seed"] = 4321
    picture = Image.effect_noise((64, 64), 40).convert("RGB")
    reply = webui.post(UPSCALE, {"images": [image_b64(picture, pnginfo=_pnginfo(prompt=json.dumps(graph)))],
                                 "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}})
    assert reply.status == 200, reply.body
    [done] = reply.json()["images"]
    info = parse_parameters(done["infotext"])
    assert (info.prompt, info.negative_prompt, info.seed) == ("a bottle with a galaxy inside", "text, watermark", 4321)
    said = [w["message"] for w in done["warnings"]]
    assert "The prompt came from ComfyUI's record: the ComfyUI graph, node 6." in said


def _pnginfo(**text: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


@pytest.mark.reliability(area="WebUI", tried="the ✨ button under the txt2img gallery, and a file dropped into the "
                         "tab, in Chromium", expected="the selected image replaced by its hires upscale (saved, its "
                         "infotext shown); the tab shows the dropped file's prompt and seed and fills the prompt field")
def test_the_gallery_button_and_the_tabs_preview_in_chromium(webui, tmp_path):
    node = shutil.which("node")
    if node is None or not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs node and Chromium at {CHROMIUM}")
    made = txt2img(webui, seed=777)
    picture = tmp_path / "dropped.png"
    decode(made["images"][0]).save(picture, pnginfo=_pnginfo(parameters=json.loads(made["info"])["infotexts"][0]))
    done = subprocess.run([node, str(ROOT / "tests" / "e2e" / "gallery.mjs"), webui.url, str(tmp_path), str(picture)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:] + webui.log_tail()
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"] == [64, 64] and seen["after"] == [128, 128]
    assert "Hires upscale to: 128x128" in seen["info"] and "Saved " in seen["log"]
    saved = Path(seen["log"].split("Saved ", 1)[1].split(".png")[0] + ".png")
    assert saved.is_file() and Image.open(saved).size == (128, 128)
    assert "Hires upscale to: 128x128" in Image.open(saved).text["parameters"]
    assert seen["preview_seed"] == "777" and seen["prompt_field"] == BASE["prompt"]
    docs = os.environ.get("HIRES_UPSCALE_SCREENSHOTS")
    if docs:  # refresh the pictures in docs/ on request
        for picture in ("gallery-button.png", "tab-preview.png"):
            shutil.copy(tmp_path / picture, Path(docs) / picture)
