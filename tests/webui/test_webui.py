"""The extension inside a real AUTOMATIC1111 WebUI, on the CPU, at tiny sizes (64 -> 128)."""

from __future__ import annotations

import json

import pytest
from harness import ESRGAN_NAME, decode, image_b64
from PIL import Image, PngImagePlugin

from hires_upscale.infotext import parse_parameters
from hires_upscale.params import SCRIPT_FIELDS, HiresParams

BASE = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64,
        "sampler_name": "Euler", "seed": 1234, "cfg_scale": 7}


def script_args(**values) -> list:
    """The alwayson_scripts args, in the documented order, from parameter values."""
    params = HiresParams(**{"enabled": True, "upscaler": ESRGAN_NAME, "hires_steps": 2, **values})
    args = [getattr(params, name) for name in SCRIPT_FIELDS]
    return ["" if name in ("sampler", "scheduler") else value for name, value in zip(SCRIPT_FIELDS, args, strict=True)]


def txt2img(webui, **extra):
    reply = webui.post("/sdapi/v1/txt2img", {**BASE, **extra})
    assert reply.status == 200, (reply.body, webui.log_tail())
    return reply.json()


@pytest.mark.smoke
def test_options_list_the_test_model_and_the_schema(webui):
    options = webui.get("/hires-upscale/v1/options").json()
    assert options["host"] == webui.kind  # detected once at start: the WebUI the harness started
    assert ESRGAN_NAME in options["upscalers"]
    assert options["upscalers"].index(ESRGAN_NAME) < options["upscalers"].index("Lanczos")
    assert options["script_args"] == list(SCRIPT_FIELDS)
    assert options["schema"]["properties"]["denoise"]["default"] == 0.3
    assert {r["code"] for r in options["advice_rules"]} >= {"latent_low_denoise", "high_denoise"}


@pytest.mark.smoke
def test_txt2img_with_the_script_returns_the_target_size_and_our_infotext(webui):
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args(scale=2)}})
    image = decode(result["images"][0])
    assert image.size == (128, 128)
    info = parse_parameters(json.loads(result["info"])["infotexts"][0])
    assert info.fields["Hires upscale upscaler"] == ESRGAN_NAME
    assert info.fields["Hires upscale to"] == "128x128"
    assert info.seed == 1234 and info.prompt == BASE["prompt"]


@pytest.mark.smoke
def test_img2img_with_the_script(webui):
    source = decode(txt2img(webui)["images"][0])
    reply = webui.post("/sdapi/v1/img2img", {**BASE, "init_images": [image_b64(source)], "denoising_strength": 0.5,
                                             "alwayson_scripts": {"Hires upscale": {"args": script_args()}}})
    assert reply.status == 200, reply.body
    assert decode(reply.json()["images"][0]).size == (128, 128)
    assert "Hires upscale to: 128x128" in reply.json()["info"]


def test_batch_of_two_keeps_each_seed(webui):
    result = txt2img(webui, batch_size=2, alwayson_scripts={"hires upscale": {"args": script_args()}})
    infotexts = json.loads(result["info"])["infotexts"]
    images = [decode(data) for data in result["images"]]
    assert [i.size for i in images] == [(128, 128), (128, 128)]
    assert [parse_parameters(t).seed for t in infotexts] == [1234, 1235]
    assert all("Hires upscale to: 128x128" in t for t in infotexts)
    assert images[0].tobytes() != images[1].tobytes()


def test_disabled_script_leaves_the_output_exactly_as_without_it(webui):
    without = txt2img(webui)
    disabled = txt2img(webui, alwayson_scripts={"hires upscale": {"args": [False]}})
    assert decode(without["images"][0]).tobytes() == decode(disabled["images"][0]).tobytes()
    assert "Hires upscale" not in disabled["info"]


@pytest.mark.smoke
def test_latent_mode_runs_in_latent_space(webui):
    args = script_args(denoise=0.6)
    args[SCRIPT_FIELDS.index("upscaler")] = "Latent"
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": args}})
    assert decode(result["images"][0]).size == (128, 128)
    assert "Hires upscale upscaler: Latent" in result["info"]


@pytest.mark.smoke
def test_own_route_recovers_prompt_and_seed_from_a_webui_png(webui):
    made = txt2img(webui, prompt="a red fox in snow", seed=777)
    webui_png = decode(made["images"][0])
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(made["info"])["infotexts"][0])
    reply = webui.post("/hires-upscale/v1/upscale", {
        "images": [image_b64(webui_png, pnginfo=info)],
        "params": {"upscaler": ESRGAN_NAME, "scale": 2, "hires_steps": 2},
    })
    assert reply.status == 200, (reply.body, webui.log_tail())
    result = reply.json()["images"][0]
    assert (result["width"], result["height"], result["source_width"]) == (128, 128, 64)
    parsed = parse_parameters(result["infotext"])
    assert parsed.prompt == "a red fox in snow" and parsed.seed == 777
    assert parsed.fields["Hires upscale to"] == "128x128"
    assert parse_parameters(decode(result["image"]).text["parameters"]).seed == 777


@pytest.mark.parametrize("body, location", [
    ({"images": [], "params": {}}, ["body", "images"]),
    ({"images": ["not base64!"]}, ["body", "images", 0]),
    ({"images": [image_b64(Image.new("RGB", (8, 8)))], "params": {"denoise": 2}},
     ["body", "params", "denoise"]),
    ({"images": [], "params": {"colour": "red"}}, ["body", "params", "colour"]),
    ({"images": [], "params": {"upscaler": "4x-Nonexistent"}}, None),
    ({"paths": ["/etc/passwd"]}, ["body", "paths", 0]),
    ({"images": "a string, not a list"}, ["body", "images"]),
])
def test_malformed_requests_are_422_naming_the_field(webui, body, location):
    if body.get("params", {}).get("upscaler") == "4x-Nonexistent":
        body = {**body, "images": [image_b64(Image.new("RGB", (8, 8)))]}
        location = ["body", "params", "upscaler"]
    reply = webui.post("/hires-upscale/v1/upscale", body)
    assert reply.status == 422, reply.body
    assert any(entry["loc"] == location for entry in reply.json()["detail"]), reply.body


def test_a_body_that_is_not_json_is_422(webui):
    reply = webui.post("/hires-upscale/v1/upscale", raw=b"{not json")
    assert reply.status == 422


def require_api_infotext(webui) -> None:
    """Skip, saying why, where the WebUI's API cannot paste an infotext into a job."""
    if webui.version.startswith("v1.6") or webui.version.startswith("v1.7"):
        pytest.skip("the API's 'infotext' field arrived in v1.8")
    if webui.kind == "forge":
        plain = webui.post("/sdapi/v1/txt2img", {**BASE, "steps": 1, "infotext": "a lighthouse\nSteps: 1, Seed: 5"})
        if plain.status == 500 and "parameterized generic" in json.dumps(plain.body):
            pytest.skip("Forge's API answers 500 to any txt2img with an 'infotext', ours or not (modules/api/api.py "
                        "get_field_value: isinstance() on its own 'Hires VAE/TE' field's list type)")


def test_pasted_infotext_sets_every_control(webui):
    require_api_infotext(webui)
    fields = HiresParams(enabled=True, upscaler=ESRGAN_NAME, scale=1.5, hires_steps=2, denoise=0.25,
                         sharpen=True).infotext_fields()
    text = "a lighthouse\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, " + ", ".join(
        f"{k}: {v}" for k, v in fields.items())
    result = txt2img(webui, infotext=text)
    info = parse_parameters(json.loads(result["info"])["infotexts"][0])
    assert decode(result["images"][0]).size == (128, 128)  # 96 snapped to 128
    assert info.fields["Hires upscale scale"] == "1.5" and info.fields["Hires upscale sharpen"] == "True"
    assert info.fields["Hires upscale denoise"] == "0.25"


def test_interrupt_keeps_what_is_done_and_the_next_job_runs(webui):
    import threading
    import time

    replies = []
    body = {**BASE, "steps": 3, "alwayson_scripts": {"hires upscale": {"args": script_args(hires_steps=6)}}}
    worker = threading.Thread(target=lambda: replies.append(webui.post("/sdapi/v1/txt2img", body)))
    worker.start()
    deadline = time.monotonic() + 120
    # A job interrupted before its first sampling step has nothing done to keep (a host that still loads
    # its checkpoint, as Forge does after a switch, is there for a while): wait for a step, then interrupt.
    while time.monotonic() < deadline and not webui.get("/sdapi/v1/progress").json().get("state", {}).get(
            "sampling_step"):
        time.sleep(0.1)
    assert webui.post("/sdapi/v1/interrupt").status == 200
    worker.join(timeout=600)
    assert replies and replies[0].status == 200, (replies and replies[0].body, webui.log_tail())
    assert len(replies[0].json()["images"]) == 1
    after = txt2img(webui, alwayson_scripts={"hires upscale": {"args": script_args()}})
    assert decode(after["images"][0]).size == (128, 128)


def txt2img_watching_progress(webui, body: dict):
    """A txt2img and every progress text seen while it ran."""
    import threading
    import time

    replies, seen = [], set()
    worker = threading.Thread(target=lambda: replies.append(webui.post("/sdapi/v1/txt2img", body)))
    worker.start()
    while worker.is_alive():
        text = webui.get("/sdapi/v1/progress?skip_current_image=true").json().get("textinfo")
        if text:
            seen.add(text)
        time.sleep(0.1)
    assert replies and replies[0].status == 200, (replies and replies[0].body, webui.log_tail())
    return replies[0], seen


def test_progress_names_our_stages(webui):
    body = {**BASE, "alwayson_scripts": {"hires upscale": {"args": script_args(hires_steps=4)}}}
    _reply, seen = txt2img_watching_progress(webui, body)
    assert any(t.startswith("Hires upscale: second pass, 4 steps at 128x128") for t in seen), seen
