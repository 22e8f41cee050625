"""The WebUI as people run it on shared and rented machines: --api-auth, the UI's login
(--gradio-auth), --subpath behind a reverse proxy, --listen without --api.

Each kind of server is one more WebUI start per host, beside the tier's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import ESRGAN_NAME, WebUI, decode, image_b64, psnr
from PIL import Image, PngImagePlugin
from proxy import Proxy
from test_webui import txt2img

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: --api-auth's user, and the UI's own login (--gradio-auth): another user, as on a real server.
API_USER = ("alice", "s3cret")
UI_USER = ("bob", "hunter2")
OPTIONS = "/hires-upscale/v1/options"
UPSCALE = "/hires-upscale/v1/upscale"
#: The engine's flags the --api-auth WebUI also starts with (preload.py): its tiles and precision.
FLAG_TILE = 48
#: A part of the extension armed to fail at start (tests/webui/faults_extension): its settings section.
FAILING_PART = "hires_upscale.webui.ui.add_option"


@pytest.fixture(scope="module")
def api_auth_webui(webui, tmp_path_factory):
    """The tier's host again, with --api --api-auth (the harness's requests send the credentials)."""
    server = WebUI(webui.checkout, tmp_path_factory.mktemp(f"api-auth-{webui.kind}"),
                   flags=["--api-auth", ":".join(API_USER), "--hires-upscale-tile-size", str(FLAG_TILE),
                          "--hires-upscale-fp32"], api_auth=API_USER)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxied_webui(webui, tmp_path_factory):
    """The tier's host again with --listen, --subpath hu and --gradio-auth, without --api, and one
    part of the extension failing at start."""
    server = WebUI(webui.checkout, tmp_path_factory.mktemp(f"proxied-{webui.kind}"),
                   flags=["--listen", "--subpath", "hu", "--gradio-auth", ":".join(UI_USER)], without=["--api"])
    server.inject({"kind": "raise", "stage": FAILING_PART})
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _browser(script: str, url: str, out: Path, *login: str) -> dict:
    node = shutil.which("node")
    if node is None or not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs node and Chromium at {CHROMIUM}")
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.skip("browser test needs playwright-core: run `npm ci` in the repository")
    done = subprocess.run([node, str(ROOT / "tests" / "e2e" / script), url, str(out), *login],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _answer(reply) -> tuple[int, str | None]:
    return reply.status, reply.headers.get("www-authenticate")


def _detail(reply) -> str:
    return reply.body["detail"] if isinstance(reply.body, dict) else reply.body


def webui_keeps_error_headers(webui: WebUI) -> bool:
    """Whether the host's API answers its own errors with their headers: A1111's exception handler
    (modules/api/api.py `handle_exception`) drops them; Forge's FastAPI default keeps them."""
    return webui.kind != "a1111"


@pytest.mark.reliability(area="WebUI", tried="--api-auth: our two routes and the host's own, without, with "
                         "wrong and with right credentials",
                         expected="401 with WWW-Authenticate: Basic exactly where the host answers so; served "
                         "with the right ones")
def test_api_auth_guards_our_routes_as_the_host_guards_its_own(api_auth_webui):
    made = txt2img(api_auth_webui)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(made["info"])["infotexts"][0])
    body = {"images": [image_b64(decode(made["images"][0]), pnginfo=info)],
            "params": {"upscaler": ESRGAN_NAME, "hires_steps": 1}}
    for credentials in (None, (API_USER[0], "wrong"), ("mallory", API_USER[1])):
        host = [api_auth_webui.get("/sdapi/v1/upscalers", auth=credentials),
                api_auth_webui.post("/sdapi/v1/png-info", {"image": ""}, auth=credentials)]
        ours = [api_auth_webui.get(OPTIONS, auth=credentials), api_auth_webui.post(UPSCALE, body, auth=credentials)]
        assert [reply.status for reply in host] == [401, 401], (credentials, host)
        # the header a client needs to offer credentials; A1111's API drops it from its own routes' 401
        # (its exception handler answers every error in a shape of its own), Forge keeps it
        assert [_answer(reply) for reply in ours] == [(401, "Basic")] * 2, (credentials, ours)
        if webui_keeps_error_headers(api_auth_webui):
            assert [_answer(reply) for reply in host] == [(401, "Basic")] * 2, (credentials, host)
        assert [_detail(reply) for reply in ours] == [_detail(reply) for reply in host], credentials
    options = api_auth_webui.get(OPTIONS)
    assert options.status == 200 and ESRGAN_NAME in options.json()["upscalers"]
    reply = api_auth_webui.post(UPSCALE, body)
    assert reply.status == 200, reply.body
    assert (reply.json()["images"][0]["width"], reply.json()["images"][0]["height"]) == (128, 128)


@pytest.mark.reliability(area="WebUI", tried="the page in Chromium on a WebUI with --api-auth, whose "
                         "credentials the browser does not have",
                         expected="live hints and the tab work; the page asks nothing of the API")
def test_the_page_needs_no_api_credentials(api_auth_webui, tmp_path):
    seen = _browser("hints.mjs", api_auth_webui.url, tmp_path)
    assert "Latent upscalers need denoise of at least 0.5" in seen["latent_warning"]
    assert seen["api_calls"] == [] and seen["tab"] is True
    assert seen["hint"], "our hover hints reached the page's titles"


@pytest.mark.reliability(area="WebUI", tried="the page in Chromium behind a reverse proxy (--subpath) and the "
                         "UI's login (--gradio-auth), --listen without --api",
                         expected="after logging in, live hints and the tab work through the proxy; no route of "
                         "ours exists, as no route of the host's API does")
def test_behind_a_proxy_and_a_login_without_the_api(proxied_webui, tmp_path):
    with Proxy(proxied_webui.url, "hu").running() as proxy:
        seen = _browser("hints.mjs", proxy.url, tmp_path, *UI_USER)
    assert "Latent upscalers need denoise of at least 0.5" in seen["latent_warning"]
    assert seen["api_calls"] == [] and seen["tab"] is True
    assert seen["address"].startswith(proxy.url), seen["address"]
    assert len(proxy.requests) > 10, "the page's own calls went through the proxy"
    # like the host's API: without --api neither of our routes exists
    assert proxied_webui.get("/sdapi/v1/upscalers").status == 404
    assert proxied_webui.get(OPTIONS).status == 404
    assert proxied_webui.post(UPSCALE, {"images": []}).status in (404, 405)


@pytest.mark.reliability(area="WebUI", tried="a part of the extension failing at start (its settings section, "
                         "injected)", expected="the console names it, what it costs and what to do; the "
                         "accordion, the tab and the page's hints still work")
def test_a_part_that_fails_at_start_is_said_and_the_rest_works(proxied_webui):
    """The server of `test_behind_a_proxy_and_a_login_without_the_api`, whose page, accordion and tab
    work, started with the settings section failing."""
    log = proxied_webui.log_tail(3000)
    assert ("sd-webui-hires-upscale: adding the Hires upscale settings failed, so some of its settings are "
            "missing") in log, log[-3000:]
    assert f"injected by the hires-upscale tests: {FAILING_PART} fails" in log
    assert "update the extension" in log
    assert proxied_webui.faults_left() == [], "the armed failure fired"


@pytest.mark.reliability(area="WebUI", tried="--hires-upscale-tile-size 48 --hires-upscale-fp32 on the command line",
                         expected="the engine runs 48 px tiles in fp32: the WebUI's result is the engine's own with "
                         "those settings, not its whole-frame or reduced-precision one")
def test_the_engine_flags_set_its_tiles_and_precision(api_auth_webui):
    from hires_upscale.upscaler import load_model

    picture = Image.effect_noise((64, 64), 50).convert("RGB")
    reply = api_auth_webui.post(UPSCALE, {"images": [image_b64(picture)], "params": {"upscaler": ESRGAN_NAME,
                                                                                      "denoise": 0}})
    assert reply.status == 200, reply.body
    theirs = decode(reply.json()["images"][0]["image"]).convert("RGB")
    model = api_auth_webui.esrgan_dir / f"{ESRGAN_NAME}.pth"
    flagged = load_model(model, device="cpu", precision="fp32", tile_size=FLAG_TILE).upscale(picture, (128, 128))
    whole = load_model(model, device="cpu", precision="fp32", tile_size=64).upscale(picture, (128, 128))
    reduced = load_model(model, device="cpu", precision="auto", tile_size=FLAG_TILE).upscale(picture, (128, 128))
    assert psnr(theirs, flagged) > max(psnr(theirs, whole), psnr(theirs, reduced)) + 3
