"""Bad arguments, bad model files and concurrent callers against the real WebUI."""

from __future__ import annotations

import json
import threading
import time

import pytest
from harness import ESRGAN_NAME, REJECTED_NAME, decode, image_b64
from PIL import PngImagePlugin
from test_webui import BASE, script_args, txt2img


@pytest.mark.reliability(area="WebUI", tried="a wrong alwayson_scripts argument in txt2img",
                         expected="the image generated un-upscaled; the info says why")
def test_wrong_alwayson_args_leave_the_generation_alone_and_say_why(webui):
    args = script_args()
    args[3] = "twice"  # scale must be a number
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": args}})
    assert decode(result["images"][0]).size == (64, 64)  # generated, not upscaled
    info = json.loads(result["info"])
    assert "Hires upscale is off for this job: scale: 'twice' is not allowed" in json.dumps(info)
    assert "Hires upscale is off for this job" in webui.log_tail(200)


@pytest.mark.reliability(area="WebUI", tried="a model the WebUI's safe unpickler refuses",
                         expected="424 from our API at the upscaler; txt2img keeps its image and says why")
def test_a_model_the_safe_unpickler_refuses_is_named_loudly(webui):
    options = webui.get("/hires-upscale/v1/options").json()
    assert REJECTED_NAME in options["upscalers"]
    made = txt2img(webui)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(made["info"])["infotexts"][0])
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [image_b64(decode(made["images"][0]), pnginfo=info)],
                                                     "params": {"upscaler": REJECTED_NAME, "hires_steps": 1}})
    if webui.kind in ("forge", "reforge"):
        # Forge (and reForge, from the older Forge) keeps modules/safe.py but never puts its checked
        # torch.load in place ("Forge do not need it"), so the file loads there, in its own upscalers
        # and in ours alike.
        assert reply.status == 200, reply.body
        result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": [True, REJECTED_NAME]}})
        assert decode(result["images"][0]).size == (128, 128)
        assert "safe unpickler" not in result["info"]
        return
    assert reply.status == 424, reply.body
    assert reply.body["detail"][0]["loc"] == ["body", "params", "upscaler"]
    assert reply.body["detail"][0]["type"] == "model_load_error"
    message = json.dumps(reply.body)
    assert f"{REJECTED_NAME}.pth" in message and "safe unpickler refuses it" in message
    # in txt2img the image stays as it was, with the reason in the info, never a silent resize
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": [True, REJECTED_NAME]}})
    assert decode(result["images"][0]).size == (64, 64)
    assert "safe unpickler refuses it" in result["info"]


@pytest.mark.reliability(area="WebUI", tried="8 concurrent API upscales beside a txt2img",
                         expected="all 200, serialized, correct sizes and seeds")
def test_concurrent_upscales_beside_a_txt2img_are_serialized_and_correct(webui):
    made = txt2img(webui, seed=4242)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(made["info"])["infotexts"][0])
    body = {"images": [image_b64(decode(made["images"][0]), pnginfo=info)],
            "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}}
    replies: list = []
    lock = threading.Lock()

    def call(path: str, payload: dict) -> None:
        reply = webui.post(path, payload)
        with lock:
            replies.append((path, reply))

    threads = [threading.Thread(target=call, args=("/sdapi/v1/txt2img", {**BASE, "steps": 3}))]
    threads += [threading.Thread(target=call, args=("/hires-upscale/v1/upscale", body)) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert all(not t.is_alive() for t in threads), f"calls still running after {time.monotonic() - started:.0f} s"
    assert len(replies) == 9 and all(reply.status == 200 for _, reply in replies), [r.body for _, r in replies]
    upscaled = [reply.json()["images"][0] for path, reply in replies if path.startswith("/hires-upscale")]
    assert all((u["width"], u["height"]) == (128, 128) and "Seed: 4242" in u["infotext"] for u in upscaled)
    assert all(decode(u["image"]).size == (128, 128) for u in upscaled)


@pytest.mark.reliability(area="WebUI", tried="API upscale of a 2-frame APNG with its parameters, and of a PNG "
                         "whose parameters text is over Pillow's limits",
                         expected="200 with a 'first_frame' warning; 422 at images[0] saying the prompt was lost")
def test_what_an_existing_image_loses_is_said(webui):
    made = txt2img(webui)
    first = decode(made["images"][0]).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(made["info"])["infotexts"][0])
    animation = image_b64(first, pnginfo=info, save_all=True, append_images=[first.rotate(90)])
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [animation],
                                                     "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}})
    assert reply.status == 200, reply.body
    assert "first_frame" in [w["code"] for w in reply.json()["images"][0]["warnings"]]
    huge = PngImagePlugin.PngInfo()
    huge.add_text("parameters", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [image_b64(first, pnginfo=huge)],
                                                     "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}})
    assert reply.status == 422, reply.body
    [entry] = reply.json()["detail"]
    assert entry["loc"] == ["body", "images", 0] and "cannot be recovered" in entry["msg"]
