"""The HTTP routes on a plain FastAPI app: real FastAPI, real validation (pydantic 2 here;
the WebUI runs them on pydantic 1, see tests/webui).

The host here is built from the core alone (upscale-only runs: no diffusion model
outside the WebUI); the WebUI's own host is exercised in tests/webui.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from conftest import noise_image  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from hires_upscale.errors import ImageLoadError  # noqa: E402
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

    def run(self, items, params):
        pipeline = Pipeline(resolve_upscaler, snap_multiple=1)
        results = []
        for name, image in items:
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
    ({"params": "not an object", "images": []}, ["body", "params"]),
])
@pytest.mark.reliability(area="API", tried="no images, bad base64, denoise 2 and NaN, an unknown parameter, 17 images, "
                         "paths outside the allowed folders and with '..', wrong JSON types",
                         expected="422 whose detail locates the field")
def test_bad_requests_are_422_naming_the_field(client, body, location):
    reply = client.post("/hires-upscale/v1/upscale", json=body)
    assert reply.status_code == 422, reply.text
    assert location in locations(reply), reply.text


@pytest.mark.reliability(area="API", tried="an upscaler file that is not a model",
                         expected="422 naming the file")
def test_a_model_that_cannot_be_used_is_422_naming_it(client, tmp_path):
    broken = tmp_path / "4x-Broken.pth"
    broken.write_bytes(b"not a model")
    reply = client.post("/hires-upscale/v1/upscale", json={"images": [b64png(noise_image(8, 8))],
                                                           "params": {"upscaler": str(broken)}})
    assert reply.status_code == 422 and "4x-Broken.pth" in reply.text


@pytest.mark.reliability(area="API", tried="a body over the size limit",
                         expected="413 before the body is parsed")
def test_oversized_bodies_are_413_before_parsing(client, monkeypatch):
    monkeypatch.setattr(api, "MAX_BODY_BYTES", 1000)
    reply = client.post("/hires-upscale/v1/upscale", content=b"{" + b" " * 2000 + b"}",
                        headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "at most 1,000" in reply.text


@pytest.mark.reliability(area="API", tried="POST upscale without --api",
                         expected="the route does not exist (404/405)")
def test_without_the_api_flag_only_options_exist(tmp_path):
    app = FastAPI()
    app.include_router(api.build_router(CoreHost(tmp_path), include_upscale=False))
    client = TestClient(app)
    assert client.get("/hires-upscale/v1/options").status_code == 200
    assert client.post("/hires-upscale/v1/upscale", json={}).status_code in (404, 405)


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

    def run(self, items, params):
        for index, (name, _image) in enumerate(items):
            if "refused" in name:
                raise api.ItemError(index, ImageLoadError(Path(name), "no PNG info"))
        return super().run(items, params)


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
