"""Bad arguments, bad model files and concurrent callers against the real WebUI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import ESRGAN_NAME, REJECTED_NAME, decode, image_b64, psnr
from PIL import PngImagePlugin
from test_webui import BASE, script_args, txt2img

from hires_upscale.infotext import parse_parameters


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


def _distinct_images(webui, count: int) -> list[str]:
    """`count` WebUI-made images of different seeds, as base64 PNGs with their parameters."""
    made = txt2img(webui, seed=4242, batch_size=count)
    infotexts = json.loads(made["info"])["infotexts"]
    encoded = []
    for data, text in zip(made["images"], infotexts, strict=True):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        encoded.append(image_b64(decode(data), pnginfo=info))
    return encoded


def _intervals(recorded: list[dict]) -> list[tuple[float, float, str]]:
    """The WebUI's jobs as (begin, end, name), from the recorder's state hooks, paired per thread."""
    open_jobs: dict[int, tuple[float, str]] = {}
    done = []
    for entry in recorded:
        if entry["hook"] == "job_begin":
            open_jobs[entry["thread"]] = (entry["time"], entry["job"])
        elif entry["hook"] == "job_end" and entry["thread"] in open_jobs:
            begun, name = open_jobs.pop(entry["thread"])
            done.append((begun, entry["time"], name))
    return sorted(done)


@pytest.mark.reliability(area="WebUI", tried="20 concurrent API upscales of 2 images each (10 pairs of identical "
                         "requests) beside a txt2img",
                         expected="every one 200 with its own two images in order; identical requests give "
                         "identical pixels; no two jobs ran at once")
def test_twenty_concurrent_upscales_beside_a_txt2img_are_serialized_and_each_answered(webui):
    images = _distinct_images(webui, 4)
    bodies = [{"images": [images[k % 4], images[(k + 1) % 4]],
               "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1, "denoise": 0.3 if k % 2 else 0}}
              for k in range(10)]
    replies: dict[tuple[str, int], object] = {}
    lock = threading.Lock()
    webui.recorded()

    def call(key: tuple[str, int], path: str, payload: dict) -> None:
        reply = webui.post(path, payload)
        with lock:
            replies[key] = reply

    threads = [threading.Thread(target=call, args=(("txt2img", 0), "/sdapi/v1/txt2img", {**BASE, "steps": 3}))]
    threads += [threading.Thread(target=call, args=(("upscale", n), "/hires-upscale/v1/upscale", bodies[n % 10]))
                for n in range(20)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=1800)
    assert all(not t.is_alive() for t in threads), f"calls still running after {time.monotonic() - started:.0f} s"
    assert len(replies) == 21 and all(r.status == 200 for r in replies.values()), \
        [r.body for r in replies.values() if r.status != 200]
    for n in range(20):
        answered = replies[("upscale", n)].json()["images"]
        sent = bodies[n % 10]["images"]
        # each answer holds this request's own images, in the order sent: the seeds say which is which
        assert [a["name"] for a in answered] == ["image 1", "image 2"]
        assert [parse_parameters(a["infotext"]).seed for a in answered] == \
            [parse_parameters(decode(i).info["parameters"]).seed for i in sent]
        assert all((a["width"], a["height"]) == (128, 128) for a in answered)
    for n in range(10):  # the same request twice: the same picture, whoever ran between them
        first, again = ([decode(a["image"]) for a in replies[("upscale", m)].json()["images"]] for m in (n, n + 10))
        if not bodies[n]["params"]["denoise"]:  # an upscale only is exact
            assert [i.tobytes() for i in first] == [i.tobytes() for i in again], n
        else:  # the host samples its VAE with its global RNG, shared by concurrent jobs: near, not exact
            assert min(psnr(a, b) for a, b in zip(first, again, strict=True)) > 40, n
    jobs = _intervals(webui.recorded())
    assert sum(name == "hires_upscale_api" for _, _, name in jobs) == 20, jobs
    overlapping = [(a, b) for a, b in zip(jobs, jobs[1:], strict=False) if b[0] < a[1]]
    assert not overlapping, overlapping


@pytest.mark.reliability(area="WebUI", tried="a slow-loris client: a POST upscale body trickled a byte a second",
                         expected="a txt2img and another upscale run and finish meanwhile; the slow request is "
                         "never let hold the WebUI's queue")
def test_a_slow_body_does_not_hold_the_queue(webui):
    images = _distinct_images(webui, 1)
    body = json.dumps({"images": images, "params": {"upscaler": ESRGAN_NAME, "denoise": 0}}).encode()
    host, port = webui.url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=60)
    try:
        slow.sendall(f"POST /hires-upscale/v1/upscale HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        stop = threading.Event()
        sent = [0]

        def trickle() -> None:
            while not stop.is_set() and sent[0] < len(body) - 1:
                slow.sendall(body[sent[0]:sent[0] + 1])
                sent[0] += 1
                stop.wait(1)

        trickler = threading.Thread(target=trickle)
        trickler.start()
        time.sleep(3)
        began = time.monotonic()
        assert decode(txt2img(webui, steps=2)["images"][0]).size == (64, 64)
        other = webui.post("/hires-upscale/v1/upscale", {"images": images,
                                                         "params": {"upscaler": ESRGAN_NAME, "denoise": 0}})
        assert other.status == 200, other.body
        waited = time.monotonic() - began
        assert trickler.is_alive() and sent[0] < len(body) - 1, "the slow body was still coming meanwhile"
        stop.set()
        trickler.join(10)
        # the last byte: the slow request itself is served like any other
        slow.sendall(body[sent[0]:])
        answer = slow.recv(65536).split(b"\r\n", 1)[0]
        assert answer.startswith(b"HTTP/1.1 200"), (answer, waited)
    finally:
        slow.close()


@pytest.mark.reliability(area="WebUI", tried="a bounded schemathesis run of our routes (their OpenAPI as the WebUI "
                         "serves it; coverage and fuzzing phases, negative data included, seed 42)",
                         expected="no server error (5xx) from any request")
def test_schemathesis_finds_no_server_error_in_our_routes(webui, tmp_path):
    spec = webui.get("/openapi.json")
    assert spec.status == 200, spec.body
    ours = {**spec.json(), "paths": {path: item for path, item in spec.json()["paths"].items()
                                     if path.startswith("/hires-upscale/")}}
    assert sorted(ours["paths"]) == ["/hires-upscale/v1/options", "/hires-upscale/v1/upscale"]
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(ours))
    command = [str(Path(sys.executable).with_name("st")), "run", str(schema), "--url", webui.url,
               "--checks", "not_a_server_error", "--mode", "all", "--phases", "examples,coverage,fuzzing",
               "--max-examples", "40", "--seed", "42", "--workers", "1", "--request-timeout", "600",
               "--report", "ndjson", "--report-dir", str(tmp_path / "report")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path,  # its cache goes there
                          env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = done.stdout[-2000:]
    assert "No issues found" in summary or "passed" in summary, summary


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
