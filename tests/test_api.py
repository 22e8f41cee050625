"""The HTTP routes on a plain FastAPI app: real FastAPI, real validation (pydantic 2 here;
the WebUI runs them on pydantic 1, see tests/webui).

The host here is built from the core alone (upscale-only runs: no diffusion model
outside the WebUI); the WebUI's own host is exercised in tests/webui.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from pathlib import Path

import anyio
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from conftest import noise_image  # noqa: E402
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from hires_upscale.errors import (  # noqa: E402
    FieldError,
    ImageLoadError,
    Interrupted,
    ModelLoadError,
    OutOfMemory,
    ParamsError,
    SecondPassFailed,
    TargetTooLargeError,
    UpscalerFailed,
)
from hires_upscale.folders import resolve_inside  # noqa: E402
from hires_upscale.images import open_image  # noqa: E402
from hires_upscale.infotext import with_fields  # noqa: E402
from hires_upscale.params import HiresParams, json_schema  # noqa: E402
from hires_upscale.pipeline import NamedResult, Pipeline  # noqa: E402
from hires_upscale.upscaler import resolve_upscaler  # noqa: E402
from hires_upscale.webui import api  # noqa: E402


class CoreHost:
    """An ApiHost from the core: Lanczos or model upscaling, no second pass."""

    def __init__(self, root):
        self.root = root

    def options(self):
        return {"schema": json_schema()}

    def base_params(self, overrides):
        return HiresParams.from_mapping({"enabled": True, "denoise": 0, **overrides})

    def open_path(self, path):
        real = resolve_inside(path, [self.root])
        return real.name, open_image(real)

    def run(self, items, params, *, client_gone):
        pipeline = Pipeline(resolve_upscaler, snap_multiple=1)
        results = []
        for name, image in items:
            if client_gone():
                break
            result = pipeline.run(image, params)
            results.append(NamedResult(name, result, with_fields("", result.infotext_fields)))
        return results


def b64png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def client(tmp_path):
    app = FastAPI()
    app.include_router(api.build_router(CoreHost(tmp_path)))
    return TestClient(app)


def locations(reply) -> list[list]:
    return [entry["loc"] for entry in reply.json()["detail"]]


def test_options_and_a_good_request(client, tmp_path):
    assert client.get("/hires-upscale/v1/options").json()["schema"]["title"] == "HiresParams"
    noise_image(30, 20).save(tmp_path / "on-disk.png")
    reply = client.post("/hires-upscale/v1/upscale", json={
        "images": [b64png(noise_image(40, 30))], "paths": [str(tmp_path / "on-disk.png")],
        "params": {"scale": 2}})
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["images"]
    assert (first["width"], first["height"], first["source_width"]) == (80, 60, 40)
    assert (second["name"], second["width"]) == ("on-disk.png", 60)
    assert Image.open(io.BytesIO(base64.b64decode(first["image"]))).size == (80, 60)
    assert "Hires upscale to: 80x60" in first["infotext"]


@pytest.mark.parametrize("body, location", [
    ({"images": []}, ["body", "images"]),
    ({"images": ["%%%"]}, ["body", "images", 0]),
    ({"images": [b64png(noise_image(8, 8))], "params": {"denoise": 2}}, ["body", "params", "denoise"]),
    ({"images": [b64png(noise_image(8, 8))], "params": {"denoise": "NaN"}}, ["body", "params", "denoise"]),
    ({"images": [b64png(noise_image(8, 8))], "params": {"colour": "red"}}, ["body", "params", "colour"]),
    ({"images": [b64png(noise_image(8, 8))] * 17}, ["body", "images"]),
    ({"paths": ["/etc/passwd"]}, ["body", "paths", 0]),
    ({"paths": ["../../etc/passwd"]}, ["body", "paths", 0]),
    ({"images": "not a list"}, ["body", "images"]),
    ({"images": None}, ["body", "images"]),
    ({"images": [b64png(noise_image(8, 8)), 1]}, ["body", "images", 1]),
    ({"paths": [None]}, ["body", "paths", 0]),
    ({"params": "not an object", "images": []}, ["body", "params"]),
])
@pytest.mark.reliability(area="API", tried="no images, bad base64, denoise 2 and NaN, an unknown parameter, 17 images, "
                         "paths outside the allowed folders and with '..', wrong JSON types and nulls",
                         expected="422 whose detail locates the field")
def test_bad_requests_are_422_naming_the_field(client, body, location):
    reply = client.post("/hires-upscale/v1/upscale", json=body)
    assert reply.status_code == 422, reply.text
    assert location in locations(reply), reply.text


@pytest.mark.reliability(area="API", tried="an upscaler file that is not a model",
                         expected="424 at params.upscaler naming the file")
def test_a_model_that_cannot_be_used_is_424_naming_it(client, tmp_path):
    broken = tmp_path / "4x-Broken.pth"
    broken.write_bytes(b"not a model")
    reply = client.post("/hires-upscale/v1/upscale", json={"images": [b64png(noise_image(8, 8))],
                                                           "params": {"upscaler": str(broken)}})
    assert reply.status_code == 424 and "4x-Broken.pth" in reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", "params", "upscaler"]
    assert reply.json()["detail"][0]["type"] == "model_load_error"


@pytest.mark.reliability(area="API", tried="a body over the size limit",
                         expected="413 before the body is parsed")
def test_oversized_bodies_are_413_before_parsing(client, monkeypatch):
    monkeypatch.setattr(api, "MAX_BODY_BYTES", 1000)
    reply = client.post("/hires-upscale/v1/upscale", content=b"{" + b" " * 2000 + b"}",
                        headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "at most 1,000" in reply.text


@pytest.mark.reliability(area="API", tried="both routes under --api-auth: no, wrong and right credentials, "
                         "a password with ':' and non-ASCII text",
                         expected="401 with WWW-Authenticate: Basic on both routes; served with the right ones")
def test_api_auth_guards_every_route(tmp_path):
    from hires_upscale.webui.auth import basic_auth_dependencies

    app = FastAPI()
    app.include_router(api.build_router(CoreHost(tmp_path), basic_auth_dependencies("alice:s3:cret,bob:pw")))
    client = TestClient(app)
    body = {"images": [b64png(noise_image(8, 8))]}
    # non-ASCII credentials are refused by FastAPI's HTTPBasic before our check, on the host's routes too
    for auth in (None, ("alice", "wrong"), ("mallory", "pw"), ("alice", "s3:cr\u00e9t")):
        for reply in (client.get("/hires-upscale/v1/options", auth=auth),
                      client.post("/hires-upscale/v1/upscale", json=body, auth=auth)):
            assert reply.status_code == 401, (auth, reply.text)
            assert reply.headers["www-authenticate"] == "Basic"
    for auth in (("alice", "s3:cret"), ("bob", "pw")):
        assert client.get("/hires-upscale/v1/options", auth=auth).status_code == 200
        assert client.post("/hires-upscale/v1/upscale", json=body, auth=auth).status_code == 200


@pytest.mark.reliability(area="API", tried="one route that cannot be added at start (injected)",
                         expected="the other route works; the console says which failed and what to do")
def test_a_route_that_cannot_be_added_leaves_the_other(tmp_path, capsys):
    from hires_upscale.webui.startup import add_routes

    routers = api.routers(CoreHost(tmp_path))

    def broken():
        raise NameError("name 'HTTPBasicCredentials' is not defined")  # what FastAPI 0.94 raised in v0.x

    app = FastAPI()
    added = add_routes(app, {**routers, api.OPTIONS_ROUTE: broken})
    assert added == [api.UPSCALE_ROUTE]
    client = TestClient(app)
    assert client.get("/hires-upscale/v1/options").status_code == 404
    reply = client.post("/hires-upscale/v1/upscale", json={"images": [b64png(noise_image(8, 8))]})
    assert reply.status_code == 200, reply.text
    said = capsys.readouterr().err
    assert said.startswith(f"*** sd-webui-hires-upscale: adding the route {api.OPTIONS_ROUTE} failed, "
                           f"so {api.OPTIONS_ROUTE} answers 404.")
    assert "update the extension" in said
    assert "NameError: name 'HTTPBasicCredentials' is not defined" in said  # with its traceback


def test_a_callback_that_fails_is_said_and_returns_nothing(capsys):
    from hires_upscale.webui.startup import guarded

    @guarded("building the Hires upscale tab", "the tab is missing")
    def build_tab():
        raise RuntimeError("gradio changed")

    assert build_tab() is None
    assert "building the Hires upscale tab failed, so the tab is missing" in capsys.readouterr().err


@pytest.mark.reliability(area="API", tried="an animated GIF and a PNG whose text is over Pillow's limits",
                         expected="200, each with a warning saying what was not kept")
def test_what_an_image_loses_comes_back_in_its_warnings(client):
    from PIL import PngImagePlugin

    frames = [noise_image(16, 16, seed=i) for i in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    huge = io.BytesIO()
    noise_image(8, 8).save(huge, format="PNG", pnginfo=info)
    reply = client.post("/hires-upscale/v1/upscale", json={"images": [
        base64.b64encode(buffer.getvalue()).decode(), base64.b64encode(huge.getvalue()).decode()]})
    assert reply.status_code == 200, reply.text
    gif, png = reply.json()["images"]
    assert [w["code"] for w in gif["warnings"]] == ["first_frame"]
    assert gif["warnings"][0]["message"] == "The file has 2 frames; only the first is upscaled."
    assert [w["code"] for w in png["warnings"]] == ["text_dropped"] and png["name"] == "image 2"


class RefusingHost(CoreHost):
    """Refuses, before any work, the items whose name says so (as the WebUI's host refuses an
    image without PNG info)."""

    def run(self, items, params, *, client_gone):
        for index, (name, _image) in enumerate(items):
            if "refused" in name:
                raise api.ItemError(index, ImageLoadError(Path(name), "no PNG info"))
        return super().run(items, params, client_gone=client_gone)


def test_a_refused_item_is_located_in_the_field_it_came_from(tmp_path):
    app = FastAPI()
    app.include_router(api.build_router(RefusingHost(tmp_path)))
    client = TestClient(app)
    noise_image(30, 20).save(tmp_path / "fine.png")
    noise_image(30, 20).save(tmp_path / "refused.png")
    image = b64png(noise_image(30, 20))
    reply = client.post("/hires-upscale/v1/upscale", json={
        "images": [image, image], "paths": [str(tmp_path / "fine.png"), str(tmp_path / "refused.png")]})
    assert reply.status_code == 422
    assert locations(reply) == [["body", "paths", 1]]
    assert "no PNG info" in reply.json()["detail"][0]["msg"]


URL = "/hires-upscale/v1/upscale"


@pytest.mark.reliability(area="API", tried="a chunked body (no Content-Length) over the size limit",
                         expected="413 while it is read, before it is parsed")
def test_chunked_bodies_over_the_limit_are_413_while_reading(client, monkeypatch):
    monkeypatch.setattr(api, "MAX_BODY_BYTES", 1000)
    reply = client.post(URL, content=iter([b"{" + b" " * 600, b" " * 600 + b"}"]),
                        headers={"content-type": "application/json"})
    assert "content-length" not in reply.request.headers  # the limit is not known from the headers
    assert reply.status_code == 413 and "at most 1,000" in reply.text
    assert reply.json()["detail"][0]["loc"] == ["body"]
    small = json.dumps({"images": [b64png(noise_image(8, 8))]}).encode()
    reply = client.post(URL, content=iter([small[:10], small[10:]]), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("body, says", [
    (b'{"images": ["\xff"]}', "must be UTF-8 JSON"),
    ("{}".encode("utf-16"), "must be UTF-8 JSON"),
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b"[]", "must be a JSON object"),
])
@pytest.mark.reliability(area="API", tried="bodies that are not UTF-8 (Latin-1 bytes, UTF-16), not JSON, empty, "
                         "nested 100,000 deep, not an object", expected="422 at body saying what it must be (not 500)")
def test_a_body_that_is_not_a_json_object_is_422_at_body(client, body, says):
    reply = client.post(URL, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    [entry] = reply.json()["detail"]
    assert entry["loc"] == ["body"] and says in entry["msg"] and entry["type"] == "value_error"


def test_a_lone_surrogate_echoed_in_a_location_is_still_a_422(client):
    reply = client.post(URL, content=b'{"images": [], "params": {"\\udcff": 1}}',
                        headers={"content-type": "application/json"})
    assert reply.status_code == 422 and locations(reply) == [["body", "params", "\\udcff"]]


def _published_request(app: FastAPI) -> dict:
    return app.openapi()["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.reliability(area="API", tried="the request schema in the OpenAPI document against the route",
                         expected="params' own schema and the image limit published; the route accepts what "
                         "the schema accepts and refuses what it refuses")
def test_the_published_request_schema_is_the_one_enforced(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _published_request(client.app)
    assert "$ref" not in json.dumps(schema)
    assert schema["properties"]["images"]["maxItems"] == schema["properties"]["paths"]["maxItems"] == api.MAX_IMAGES
    params = schema["properties"]["params"]
    assert params["properties"].keys() == json_schema()["properties"].keys()
    assert params["additionalProperties"] is False and params["properties"]["denoise"]["maximum"] == 1
    validator = jsonschema.Draft202012Validator(schema)
    image = b64png(noise_image(8, 8))
    for body, valid in [
        ({"images": [image]}, True),
        ({"images": [image], "params": {"sampler": None, "denoise": 0, "scale": 1.5}}, True),
        ({"images": [image], "params": {"denoise": 2}}, False),
        ({"images": [image], "params": {"colour": "red"}}, False),
        ({"images": [image], "params": {"tiled": "sometimes"}}, False),
        ({"images": [image] * (api.MAX_IMAGES + 1)}, False),
        ({"images": [image, 1]}, False),
        ({"images": [image], "params": []}, False),
    ]:
        assert validator.is_valid(body) is valid, body
        reply = client.post(URL, json=body)
        assert reply.status_code == (200 if valid else 422), (body, reply.text)


class FailingHost(CoreHost):
    """Fails every run with the error it was given."""

    def __init__(self, root, error):
        super().__init__(root)
        self.error = error

    def run(self, items, params, *, client_gone):
        raise self.error


@pytest.mark.parametrize("error, status, location, kind", [
    (ParamsError([FieldError("denoise", 2, "a number from 0 to 1")]), 422, ["body", "params", "denoise"],
     "value_error"),
    (TargetTooLargeError(9000, 9000, 1_000_000), 422, ["body", "params"], "value_error"),
    (OutOfMemory("second pass", (512, 512), "set Tiled to auto or on"), 507, ["body", "params"], "out_of_memory"),
    (ModelLoadError(Path("4x-Broken.pth"), "no such file"), 424, ["body", "params", "upscaler"], "model_load_error"),
    (UpscalerFailed("4x-UltraSharp", "CUDA error"), 424, ["body", "params", "upscaler"], "upscaler_failed"),
    (SecondPassFailed("an extension stopped it"), 424, ["body", "params"], "second_pass_failed"),
    (Interrupted("stopped"), 422, ["body", "params"], "value_error"),
])
@pytest.mark.reliability(area="API", tried="each named error of a run: bad parameters, a target over the limit, out of "
                         "memory, a model that does not load, an upscaler or a second pass that failed, an interrupt",
                         expected="422 / 507 / 424 as the status table says, the detail locating the field")
def test_each_named_error_has_its_status(tmp_path, error, status, location, kind):
    app = FastAPI()
    app.include_router(api.build_router(FailingHost(tmp_path, error)))
    reply = TestClient(app).post(URL, json={"images": [b64png(noise_image(8, 8))]})
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"] == [{"loc": location, "msg": str(error), "type": kind}]


class SlowHost(CoreHost):
    """Spends up to `patience` seconds on each image, waiting for the client to go away, and
    counts the images it got through."""

    patience = 30.0

    def __init__(self, root):
        super().__init__(root)
        self.started, self.finished = threading.Event(), threading.Event()
        self.processed = 0

    def run(self, items, params, *, client_gone):
        self.started.set()
        try:
            for _item in items:
                waited_until = time.monotonic() + self.patience
                while not client_gone() and time.monotonic() < waited_until:
                    time.sleep(0.01)
                if client_gone():
                    return []
                self.processed += 1
            return []
        finally:
            self.finished.set()


def _serve(app: FastAPI):
    """A real uvicorn server for `app` on a free port of 127.0.0.1, in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def _app_like_the_webui(host, with_middleware: bool) -> FastAPI:
    app = FastAPI()
    if with_middleware:  # the WebUI's API logs each request through a BaseHTTPMiddleware
        @app.middleware("http")
        async def passthrough(request, call_next):
            return await call_next(request)
    app.include_router(api.build_router(host))
    return app


def _raw_post(port: int, body: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return connection


@pytest.mark.parametrize("with_middleware", [False, True], ids=["plain", "behind-middleware"])
def test_a_real_server_answers_a_request(tmp_path, with_middleware):
    server, thread, port = _serve(_app_like_the_webui(CoreHost(tmp_path), with_middleware))
    try:
        connection = _raw_post(port, json.dumps({"images": [b64png(noise_image(8, 8))]}).encode())
        with connection, connection.makefile("rb") as reply:
            assert reply.readline().startswith(b"HTTP/1.1 200"), "no 200"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("with_middleware", [False, True], ids=["plain", "behind-middleware"])
@pytest.mark.reliability(area="API", tried="a client that sends 4 images and hangs up while the first is in work, on "
                         "a real uvicorn server, with and without a middleware like the WebUI's",
                         expected="the host stops between images instead of holding the queue for all 4")
def test_the_run_stops_when_the_client_goes_away(tmp_path, with_middleware):
    host = SlowHost(tmp_path)
    server, thread, port = _serve(_app_like_the_webui(host, with_middleware))
    try:
        connection = _raw_post(port, json.dumps({"images": [b64png(noise_image(8, 8))] * 4}).encode())
        assert host.started.wait(30), "the run did not start"
        connection.close()
        # the deadline only guards against hanging: the host says when it is done
        assert host.finished.wait(4 * SlowHost.patience + 30), "the run did not finish"
        assert host.processed < 4, "the run went on after the client had gone"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_client_that_hangs_up_during_the_body_is_a_400_not_a_server_error():
    async def hung_up():
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "POST", "path": URL, "headers": []}, hung_up)
    with pytest.raises(HTTPException) as refused:
        anyio.run(api._read_body, request)
    assert refused.value.status_code == 400


class LongInfotextHost(CoreHost):
    """A host whose results carry an infotext longer than a JPEG's EXIF holds (a very long prompt)."""

    def run(self, items, params, *, client_gone):
        return [NamedResult(done.name, done.result, "a lighthouse, " * 2500)
                for done in super().run(items, params, client_gone=client_gone)]


def test_a_jpeg_that_cannot_hold_its_infotext_comes_back_as_png_and_says_so(tmp_path):
    app = FastAPI()
    app.include_router(api.build_router(LongInfotextHost(tmp_path)))
    buffer = io.BytesIO()
    noise_image(16, 16).save(buffer, format="JPEG")
    reply = TestClient(app).post("/hires-upscale/v1/upscale", json={
        "images": [base64.b64encode(buffer.getvalue()).decode()], "output_format": "same"})
    assert reply.status_code == 200, reply.text
    [done] = reply.json()["images"]
    assert done["format"] == "PNG" and [w["code"] for w in done["warnings"]] == ["output_format_png"]
    with Image.open(io.BytesIO(base64.b64decode(done["image"]))) as image:
        assert image.format == "PNG" and image.text["parameters"] == done["infotext"]
