"""Fuzzing the upscale route from its own OpenAPI schema, on a real FastAPI app.

Two sources of requests, both deterministic (hypothesis, derandomized):

- bodies drawn from the request schema `app.openapi()` publishes (the
  parameters' own schema and the image limits included), and images often
  replaced by real ones so that requests reach the pipeline;
- near-valid bodies: one good request with one thing made wrong (a value of
  the wrong type, out of range, NaN/inf, a negative or zero size, a size over
  the pixel limit, an unknown upscaler, a hostile path, a hostile image).

Whatever comes in, the answer is never a 5xx: it is a 200, a 413 for an
oversized body, a 424 for an upscaler that cannot be used, or a 422; every
`detail` entry locates a request field.
(schemathesis was not used: its pytest plugin would load into every test run;
hypothesis-jsonschema 0.23.1 fails on objects with this hypothesis, 6.170. The
schemas here use few keywords, so `from_schema` below covers them and refuses
any other, so a schema change cannot silently narrow the fuzzing.)
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import zlib
from collections import Counter

import pytest
from conftest import noise_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_api import CoreHost, b64png  # noqa: E402

from hires_upscale.params import HiresParams, json_schema  # noqa: E402
from hires_upscale.plan import make_plan  # noqa: E402
from hires_upscale.webui import api  # noqa: E402

ROUTE = "/hires-upscale/v1/upscale"
#: Output limit of the fuzzed host: the real limit's refusal (TargetTooLargeError), at a size that
#: keeps every accepted case a few milliseconds of Lanczos instead of up to 64 MP of PNG encoding.
FUZZ_MAX_PIXELS = 256 * 256
#: Body limit while fuzzing, so that large generated bodies meet the 413 path too.
FUZZ_MAX_BODY = 64 * 1024
EXAMPLES = 120  # per source: 240 requests in all
REQUEST_FIELDS = {"images", "paths", "params"}
FIELDS = [f for f in HiresParams.__dataclass_fields__]


class FuzzHost(CoreHost):
    """The core host, planning each image first against FUZZ_MAX_PIXELS (the same refusal the WebUI makes)."""

    def run(self, items, params, *, client_gone):
        for _name, image in items:
            make_plan(image.size, params, multiple=1, max_pixels=FUZZ_MAX_PIXELS)
        return super().run(items, params, client_gone=client_gone)


def _png_claiming(width: int, height: int) -> str:
    """A 1x1 PNG whose header says width x height: a decompression bomb's first bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header[4:]
    data[29:33] = struct.pack(">I", zlib.crc32(header) & 0xFFFFFFFF)
    return base64.b64encode(bytes(data)).decode()


def _gif() -> str:
    frames = [noise_image(12, 10, seed=i) for i in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return base64.b64encode(buffer.getvalue()).decode()


GOOD_IMAGES = [b64png(noise_image(12, 8)), "data:image/png;base64," + b64png(noise_image(8, 12, "RGBA")),
               b64png(noise_image(9, 9, "LA")), _gif()]
BAD_IMAGES = [_png_claiming(100_000, 100_000), _png_claiming(0, 5), "", "data:", "%%%", "data:image/png;base64,",
              base64.b64encode(b"GIF89a" + b"\0" * 20).decode(), GOOD_IMAGES[0][: len(GOOD_IMAGES[0]) // 2]]
HOSTILE_PATHS = ["/etc/passwd", "../../etc/passwd", "a\x00b.png", "~nosuchuser/x.png", "~", "", ".", "x" * 5000,
                 "/proc/self/mem", "inputs/../../x.png", "\udcff.png"]
UPSCALER_NAMES = ["Lanczos", "lanczos", "None", "Latent", "Latent (nearest)", "4x-UltraSharp", "", " ", "R-ESRGAN 4x+",
                  "a\x00b.pth", "~nosuchuser/m.pth", "/etc/passwd", "/", "../x.pth", "x" * 5000, "\U0001f600.pth"]


#: The JSON schema keywords `from_schema` understands; the rest only describe.
_KEYWORDS = {"type", "anyOf", "properties", "additionalProperties", "items", "maxItems", "minimum", "maximum",
             "enum", "minLength"}
_DESCRIPTIVE = {"title", "description", "default"}


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid under `schema` (the keywords of `_KEYWORDS`), edge values included."""
    unknown = set(schema) - _KEYWORDS - _DESCRIPTIVE
    assert not unknown, f"the fuzzer does not know {unknown}: teach from_schema"
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        return st.one_of([from_schema({**rest, **choice}) for choice in schema["anyOf"]])
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return st.one_of([_of_type(kind, schema) for kind in kinds])


def _of_type(kind: str, schema: dict) -> st.SearchStrategy:
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(low, high)
    if kind == "number":  # whole numbers too: JSON does not tell 2 from 2.0
        return st.one_of(st.floats(low, high, allow_nan=False), st.integers(math.ceil(low), math.floor(high)))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=40)
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=schema.get("maxItems", 3))
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        fixed = st.fixed_dictionaries({}, optional=properties)
        if extra is False:
            return fixed
        others = st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=10)),
                                 max_size=2)
        return st.builds(lambda known, more: {**more, **known}, fixed, others)
    raise AssertionError(f"the fuzzer does not know type {kind!r}")


def _request_schema(app: FastAPI) -> dict:
    """The request body schema the route publishes, its image limits narrowed for speed."""
    document = app.openapi()
    body = document["paths"][ROUTE]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = json.loads(json.dumps(body))
    properties = schema["properties"]
    assert properties["params"]["properties"].keys() == json_schema()["properties"].keys()
    assert properties["images"]["maxItems"] == properties["paths"]["maxItems"] == api.MAX_IMAGES
    properties["images"]["maxItems"] = 3  # more is the tested MAX_IMAGES refusal, not new ground
    properties["paths"]["maxItems"] = 2
    return schema


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("allowed")
    noise_image(10, 6).save(root / "inside.png")
    app = FastAPI()
    app.include_router(api.build_router(FuzzHost(root)))
    return app, root


def _send(client: TestClient, body) -> tuple[int, object]:
    """POST `body` as JSON; NaN and infinities are written as Python's json does (the host accepts them)."""
    data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    reply = client.post(ROUTE, content=data, headers={"content-type": "application/json"})
    try:
        return reply.status_code, reply.json()
    except ValueError:  # a 500 from the server's last resort is plain text
        return reply.status_code, reply.text


def _check(status: int, payload, body) -> None:
    shown = repr(body)[:300]
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    assert status < 500, f"{status} for {shown}: {payload}"
    assert status in (200, 413, 422, 424), f"{status} for {shown}: {payload}"
    if status == 200:
        for image in payload["images"]:
            assert image["width"] * image["height"] <= FUZZ_MAX_PIXELS
        return
    detail = payload["detail"]
    assert isinstance(detail, list) and detail, f"{status} without entries for {shown}: {payload}"
    for entry in detail:
        loc = entry["loc"]
        assert loc and loc[0] == "body", f"no location for {shown}: {entry}"
        if status == 424:  # nothing else fails a run on the core host
            assert loc == ["body", "params", "upscaler"] and entry["type"] == "model_load_error", entry
        if status == 422:
            # a body that is no object at all is located at "body" alone
            assert len(loc) == 1 or loc[1] in REQUEST_FIELDS, f"{entry} names no request field"
            if len(loc) > 2 and loc[1] == "params" and isinstance(loc[2], str):
                sent = body.get("params") if isinstance(body, dict) else None
                assert loc[2] in FIELDS or (isinstance(sent, dict) and loc[2] in sent), f"{entry}: which field?"
        assert isinstance(entry["msg"], str) and entry["msg"] and "Traceback" not in entry["msg"]


@st.composite
def schema_bodies(draw, schema: dict):
    body = draw(from_schema(schema))
    if draw(st.booleans()):  # often real images, so the request goes past decoding into the pipeline
        body["images"] = draw(st.lists(st.sampled_from(GOOD_IMAGES), min_size=1, max_size=2))
        body["paths"] = draw(st.sampled_from([[], ["inside.png"]]))
    return body


_WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_NUMBERS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, -1e9, 1e308, 2**64, 16384, 16385,
                                      100_000, 0.5, 1e-9, 8.0000001]), st.integers(), st.floats())


@st.composite
def near_valid_bodies(draw, root):
    """A good request with one part made wrong."""
    body = {"images": [GOOD_IMAGES[0]], "params": {"scale": 2}}
    where = draw(st.sampled_from(["field", "field", "number", "size", "upscaler", "image", "path", "shape", "big"]))
    if where == "field":
        body["params"][draw(st.sampled_from(FIELDS + ["colour", ""]))] = draw(_WRONG_TYPES)
    elif where == "number":
        name = draw(st.sampled_from(["scale", "width", "height", "denoise", "hires_steps", "tile_size",
                                     "sharpen_strength", "seed", "cfg_scale"]))
        body["params"][name] = draw(_NUMBERS)
    elif where == "size":  # over the pixel limit, zero, negative
        body["params"] = {"resize_mode": "size", "width": draw(st.integers(-10, 20_000)),
                          "height": draw(st.integers(-10, 20_000)), "fit": draw(st.sampled_from(["crop", "fill",
                                                                                                  "stretch"]))}
        if draw(st.booleans()):
            body["params"] = {"scale": draw(_NUMBERS)}
    elif where == "upscaler":
        body["params"]["upscaler"] = draw(st.one_of(st.sampled_from(UPSCALER_NAMES), st.text(max_size=20)))
    elif where == "image":
        body["images"] = [draw(st.sampled_from(BAD_IMAGES + GOOD_IMAGES))]
    elif where == "path":
        body = {"paths": [draw(st.one_of(st.sampled_from(HOSTILE_PATHS + [str(root / "inside.png")]),
                                         st.text(max_size=30)))]}
    elif where == "shape":
        return draw(st.sampled_from([b"", b"{", b"[]", b"null", b"1", b'"x"', b'{"images": {}}', b"\xff\xfe",
                                     b'{"images": [1]}', b'{"params": []}', b'{"images": ["a"], "params": {"a": {}}}',
                                     b'{"images": null}', b'{"paths": [null]}']))
    else:  # over the body limit: 413 before parsing
        body["images"] = ["A" * (FUZZ_MAX_BODY + draw(st.integers(1, 1000)))]
    return body


_SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                            HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _fuzz(fuzz_app, monkeypatch, strategy) -> Counter:
    monkeypatch.setattr(api, "MAX_BODY_BYTES", FUZZ_MAX_BODY)
    app, _root = fuzz_app
    client = TestClient(app, raise_server_exceptions=False)
    statuses: Counter = Counter()

    @_SETTINGS
    @given(body=strategy)
    def case(body):
        status, payload = _send(client, body)
        _check(status, payload, body)
        statuses[status] += 1

    case()
    return statuses


@pytest.mark.reliability(area="API", tried=f"{EXAMPLES} request bodies generated from the route's OpenAPI schema "
                         "(params' own schema and the image limits, as published), often with real images",
                         expected="never a 5xx: 200, or a 422/424 whose every entry locates a request field")
def test_bodies_from_the_schema(fuzz_app, monkeypatch):
    statuses = _fuzz(fuzz_app, monkeypatch, schema_bodies(_request_schema(fuzz_app[0])))
    assert sum(statuses.values()) >= EXAMPLES
    assert statuses[200] and statuses[422], statuses  # both the pipeline and the refusals were reached


@pytest.mark.reliability(area="API", tried=f"{EXAMPLES} near-valid bodies: wrong types per field, out-of-range "
                         "numbers, NaN/inf, negative/zero sizes, sizes over the pixel limit, unknown upscalers, "
                         "hostile paths and images, malformed JSON, bodies over the size limit",
                         expected="never a 5xx: 200, 413 for oversize, or a 422/424 locating the field")
def test_near_valid_bodies(fuzz_app, monkeypatch):
    statuses = _fuzz(fuzz_app, monkeypatch, near_valid_bodies(fuzz_app[1]))
    assert sum(statuses.values()) >= EXAMPLES
    assert statuses[422] and statuses[413] and statuses[200], statuses


@pytest.mark.reliability(area="API", tried="paths and upscaler names with a NUL byte, '~nosuchuser', 5000 characters",
                         expected="422 naming paths[0], 424 naming params.upscaler (these were 500s before)")
@pytest.mark.parametrize("body, expected, location", [
    ({"paths": ["a\x00b.png"]}, 422, ["body", "paths", 0]),
    ({"paths": ["~nosuchuser/x.png"]}, 422, ["body", "paths", 0]),
    ({"paths": ["x" * 5000]}, 422, ["body", "paths", 0]),
    ({"images": [GOOD_IMAGES[0]], "params": {"upscaler": "a\x00b.pth"}}, 424, ["body", "params", "upscaler"]),
    ({"images": [GOOD_IMAGES[0]], "params": {"upscaler": "~nosuchuser/m.pth"}}, 424, ["body", "params", "upscaler"]),
])
def test_unusable_names_are_refused_not_500(fuzz_app, body, expected, location):
    client = TestClient(fuzz_app[0], raise_server_exceptions=False)
    status, payload = _send(client, body)
    assert status == expected, payload
    assert payload["detail"][0]["loc"] == location
