"""HTTP routes under /hires-upscale/v1/, as a FastAPI router.

The router talks to the WebUI only through an `ApiHost` (see `service.WebUIApiHost`),
so it can be mounted on a plain FastAPI app in tests. It uses only what pydantic v1
+ FastAPI 0.94 (A1111) and pydantic v2 + FastAPI 0.104 (Forge) both accept.

`POST upscale` reads and checks its JSON body itself, so the rules it enforces and
the request schema it publishes are written once, here, and its answers are the
same on both pydantic versions. Every bad request is a 422 whose `detail` has the
FastAPI shape: `loc` names the field. What a model file or the device caused has
its own status (`STATUSES`).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, Protocol

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..advice import Advice
from ..errors import (
    FieldError,
    HiresUpscaleError,
    ModelLoadError,
    OutOfMemory,
    ParamsError,
    SecondPassFailed,
    TargetTooLargeError,
    UpscalerFailed,
)
from ..images import decode_base64_image, encode_image, format_holding, source_format
from ..params import HiresParams, json_schema
from ..pipeline import NamedResult

PREFIX = "/hires-upscale/v1"
#: Images per request, over `images` and `paths` together: each one is a full second pass.
MAX_IMAGES = 16
#: Request bodies above this are refused with 413 before they are parsed (16 images of 8 MP as base64 PNG fit).
MAX_BODY_BYTES = 256 * 1024 * 1024

#: Our named errors -> (status, where in the request, detail type); the first that matches wins, so
#: subclasses come before `HiresUpscaleError`. `ParamsError` and `ItemError` are located per field / item.
STATUSES: tuple[tuple[type[HiresUpscaleError], int, tuple[str, ...], str], ...] = (
    (TargetTooLargeError, 422, ("params",), "value_error"),
    (OutOfMemory, 507, ("params",), "out_of_memory"),
    (ModelLoadError, 424, ("params", "upscaler"), "model_load_error"),
    (UpscalerFailed, 424, ("params", "upscaler"), "upscaler_failed"),
    (SecondPassFailed, 424, ("params",), "second_pass_failed"),
    (HiresUpscaleError, 422, ("params",), "value_error"),
)


#: `output_format`: PNG always, or the input's own where it is JPEG or WebP.
OUTPUT_FORMATS = ("png", "same")


class UpscaledImage(BaseModel):
    name: str
    image: str = Field(description="base64 image (PNG, or with output_format 'same' a JPEG or WebP input's own "
                                   "format) with its parameters text (PNG text; JPEG/WebP: EXIF UserComment)")
    format: str = Field("PNG", description="PNG, JPEG or WEBP")
    infotext: str
    width: int
    height: int
    source_width: int
    source_height: int
    warnings: list[dict[str, str]]
    interrupted: bool


class UpscaleResponse(BaseModel):
    images: list[UpscaledImage]


class ItemError(HiresUpscaleError):
    """One image of a request cannot be used; `index` counts over images then paths."""

    def __init__(self, index: int, error: HiresUpscaleError) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


class ApiHost(Protocol):
    def options(self) -> dict[str, Any]: ...

    def base_params(self, overrides: dict[str, Any]) -> HiresParams: ...

    def open_path(self, path: str) -> tuple[str, Image.Image]: ...

    def run(self, items: list[tuple[str, Image.Image]], params: HiresParams, *,
            client_gone: Callable[[], bool]) -> list[NamedResult]:
        """Every item, or ItemError naming the first that cannot be used, before any work is done.

        Between images, once `client_gone()` is true, stop and return the results done so far
        (nobody reads them: the point is to let the WebUI's queue go).
        """
        ...


def entry(location: tuple[str | int, ...], message: str, kind: str = "value_error") -> dict[str, Any]:
    """One `detail` entry, located under "body" like FastAPI's own validation errors."""
    loc = ["body", *(_utf8(part) if isinstance(part, str) else part for part in location)]
    return {"loc": loc, "msg": _utf8(message), "type": kind}


def _utf8(text: str) -> str:
    # JSON may carry a lone surrogate ("\udcff"); echoed back, it cannot be encoded and the answer becomes a 500
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unprocessable_at(message: str, *location: str | int) -> HTTPException:
    return HTTPException(status_code=422, detail=[entry(location, message)])


def refusal(error: HiresUpscaleError) -> HTTPException:
    """The HTTP answer to one of our named errors (the core knows nothing of HTTP)."""
    if isinstance(error, ParamsError):
        return HTTPException(status_code=422, detail=[entry(("params", e.field), e.message) for e in error.errors])
    status, location, kind = next((s, loc, k) for cls, s, loc, k in STATUSES if isinstance(error, cls))
    return HTTPException(status_code=status, detail=[entry(location, str(error), kind)])


def request_schema() -> dict[str, Any]:
    """The body `POST upscale` accepts, as its OpenAPI document publishes it; `_parse` and the
    host check exactly these rules (plus: at least one image, at most MAX_IMAGES in all)."""
    params = {key: value for key, value in json_schema().items() if key != "$schema"}
    # FastAPI 0.94 checks its OpenAPI document against OpenAPI 3.0, where `type` is one name:
    # ["string", "null"] is published as the anyOf both 3.0 and 3.1 accept.
    params["properties"] = {name: _one_type(prop) for name, prop in params["properties"].items()}
    params["description"] = "Hires upscale parameters; unset ones take their defaults."

    def strings(description: str) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string"}, "maxItems": MAX_IMAGES, "default": [],
                "description": f"{description} At most {MAX_IMAGES} images in 'images' and 'paths' together."}

    return {"title": "UpscaleRequest", "type": "object", "properties": {
        "images": strings("Images as base64 (PNG, JPEG, WebP...; data: URLs accepted). Any picture: the prompt "
                          "and seed are read from the WebUI's, ComfyUI's, NovelAI's, InvokeAI's, Fooocus's or "
                          "SwarmUI's record where it has one; with none, the typed prompt and the WebUI's defaults."),
        "paths": strings("Image files inside the allowed folders (the WebUI's output folders and those in "
                         "the settings)."),
        "params": params,
        "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS), "default": "png",
                          "description": "png, or same: a JPEG or WebP input comes back in its own format, its "
                                         "generation info in EXIF as the WebUI writes it."},
    }}


def _one_type(schema: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(schema.get("type"), list):
        return schema
    rest = {key: value for key, value in schema.items() if key != "type"}
    return {**rest, "anyOf": [{"type": kind} for kind in schema["type"]]}


def _too_large(size: str) -> HTTPException:
    return HTTPException(status_code=413, detail=[entry((), f"the request body is {size} bytes; at most "
                                                            f"{MAX_BODY_BYTES:,} are accepted")])


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large: by its declared length
    before reading, else while reading (a chunked body declares none)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(f"{int(declared):,}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _too_large(f"over {MAX_BODY_BYTES:,}")
                chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to read the answer, but it is no server error (no traceback)
        raise HTTPException(status_code=400, detail=[entry((), "the client went away during the body")]) from None
    return b"".join(chunks)


def _parse(body: bytes) -> tuple[list[str], list[str], dict[str, Any], str]:
    """images, paths, params and the output format from the body, or 422 listing every part of the
    wrong shape."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise unprocessable_at(f"the request body must be UTF-8 JSON; byte {error.start} is not UTF-8") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser goes
        raise unprocessable_at(f"the request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise unprocessable_at("the request body must be a JSON object with 'images', 'paths' and 'params'")
    problems: list[dict[str, Any]] = []
    lists: dict[str, list[str]] = {}
    for name in ("images", "paths"):
        items = value.get(name, [])
        if not isinstance(items, list):
            problems.append(entry((name,), f"{name} must be an array of strings"))
            continue
        problems += [entry((name, index), f"{name}[{index}] must be a string")
                     for index, item in enumerate(items) if not isinstance(item, str)]
        lists[name] = items
    params = value.get("params", {})
    if not isinstance(params, dict):
        problems.append(entry(("params",), "params must be an object of named parameters"))
    output_format = value.get("output_format", "png")
    if output_format not in OUTPUT_FORMATS:
        problems.append(entry(("output_format",), FieldError("output_format", output_format,
                                                             " or ".join(map(repr, OUTPUT_FORMATS))).message))
    if problems:
        raise HTTPException(status_code=422, detail=problems)
    return lists["images"], lists["paths"], params, output_format


def _upscale(host: ApiHost, body: bytes, client_gone: Callable[[], bool]) -> UpscaleResponse:
    """The blocking part of `POST upscale`: check, decode, run, encode."""
    images, paths, overrides, output_format = _parse(body)
    try:
        params = host.base_params(overrides)
    except HiresUpscaleError as error:
        raise refusal(error) from None
    count = len(images) + len(paths)
    if count == 0:
        raise unprocessable_at(FieldError("images", [], "at least one image in 'images' or 'paths'").message, "images")
    if count > MAX_IMAGES:
        raise unprocessable_at(FieldError("images", count, f"at most {MAX_IMAGES} images per request").message,
                               "images")
    items: list[tuple[str, Image.Image]] = []
    for index, data in enumerate(images):
        try:
            name = f"image {index + 1}"
            items.append((name, decode_base64_image(data, name)))
        except HiresUpscaleError as error:
            raise unprocessable_at(str(error), "images", index) from None
    for index, path in enumerate(paths):
        try:
            items.append(host.open_path(path))
        except HiresUpscaleError as error:
            raise unprocessable_at(str(error), "paths", index) from None
    try:
        results = host.run(items, params, client_gone=client_gone)
    except ItemError as error:
        # items are the images, then the paths
        location = ("images", error.index) if error.index < len(images) else ("paths", error.index - len(images))
        raise unprocessable_at(str(error), *location) from None
    except HiresUpscaleError as error:
        raise refusal(error) from None
    formats = [_output_format(image, output_format) for _, image in items]
    return UpscaleResponse(images=[
        UpscaledImage(
            name=done.name, image=_encoded(done.result.image, fmt, done.infotext), format=fmt, infotext=done.infotext,
            width=done.result.image.width, height=done.result.image.height,
            source_width=done.result.plan.source[0], source_height=done.result.plan.source[1],
            warnings=[*done.result.advice, *_format_notes(wanted, fmt)], interrupted=done.result.interrupted,
        )
        for done, wanted in zip(results, formats, strict=False)  # a client gone may leave fewer results
        for fmt in [format_holding(wanted, {"parameters": done.infotext})]
    ])


def _format_notes(wanted: str, fmt: str) -> list[dict[str, str]]:
    if wanted == fmt:
        return []
    return [Advice("output_format_png", "info", "output_format",
                   f"Returned as PNG, not {wanted}: a {wanted}'s EXIF cannot hold this image's generation info "
                   "(over 32,000 characters).").as_dict()]


async def _in_thread_watching_client(request: Request, work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args, client_gone)` in a worker thread, while a task listens for the client going away."""
    gone = threading.Event()

    async def listen() -> None:
        # Once the body is read, the server's next message is the disconnect. Waiting for it, not
        # polling Request.is_disconnected, also works behind a BaseHTTPMiddleware (the WebUI's API
        # adds one), through which a poll never sees the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listen)
        try:
            result = await run_in_threadpool(work, *args, gone.is_set)
        except Exception as error:  # raised below: anyio 4 would wrap it in an ExceptionGroup here
            failure = error
        tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


def _output_format(image: Image.Image, output_format: str) -> str:
    kept = source_format(image) if output_format == "same" else None
    return kept if kept in ("JPEG", "WEBP") else "PNG"


def _encoded(image: Image.Image, fmt: str, infotext: str) -> str:
    """base64 of `image` in `fmt`, its infotext where the format keeps it (`images.encode_image`)."""
    buffer = io.BytesIO()
    encode_image(image, buffer, fmt, {"parameters": infotext} if infotext else {})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


#: The routes, each added on its own (`routers`): one that cannot be added leaves the other.
OPTIONS_ROUTE = f"GET {PREFIX}/options"
UPSCALE_ROUTE = f"POST {PREFIX}/upscale"


class HeadersKeptRoute(APIRoute):
    """A route that answers an HTTP error carrying headers itself, headers included: the 401 of
    --api-auth with its `WWW-Authenticate`, which a client needs to offer credentials. A1111's API
    gives every error that reaches the app an answer of its own shape and drops the headers (its
    own routes' 401s lack the header there); Forge's keeps them."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handle = super().get_route_handler()

        async def answer(request: Request) -> Any:
            try:
                return await handle(request)
            except StarletteHTTPException as error:
                if not error.headers:
                    raise
                return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

        return answer


def routers(host: ApiHost, dependencies: list[Any] | None = None) -> dict[str, Callable[[], APIRouter]]:
    """Each route's router, built when called, by the route's name. `dependencies` guard every
    route, as the WebUI's --api-auth guards every route of its own API."""
    guards = list(dependencies or [])

    def new_router() -> APIRouter:
        return APIRouter(prefix=PREFIX, tags=["Hires upscale"], dependencies=guards, route_class=HeadersKeptRoute)

    def options_router() -> APIRouter:
        router = new_router()

        @router.get("/options")
        def options() -> dict[str, Any]:
            """Upscalers, presets, defaults, limits, the parameters' JSON schema and the advice rules."""
            return host.options()

        return router

    def upscale_router() -> APIRouter:
        router = new_router()
        body = {"required": True, "content": {"application/json": {"schema": request_schema()}}}
        refusals: dict[int | str, dict[str, Any]] = {
            413: {"description": f"The body is over {MAX_BODY_BYTES:,} bytes."},
            422: {"description": "A bad request; `detail[].loc` names the field."},
            424: {"description": "The upscaler's model or the second pass failed; `detail[].type` says which."},
            507: {"description": "Out of device memory; `detail[].msg` says what to change."},
        }
        if guards:
            refusals[401] = {"description": "No or wrong credentials (the WebUI's --api-auth)."}

        @router.post("/upscale", response_model=UpscaleResponse, openapi_extra={"requestBody": body},
                     responses=refusals)
        async def upscale(request: Request) -> UpscaleResponse:
            """Hires-upscale existing images: upscale, img2img second pass with each image's own prompt
            and seed (from its PNG info), optional sharpen."""
            data = await _read_body(request)
            return await _in_thread_watching_client(request, _upscale, host, data)

        return router

    return {OPTIONS_ROUTE: options_router, UPSCALE_ROUTE: upscale_router}


def build_router(host: ApiHost, dependencies: list[Any] | None = None) -> APIRouter:
    """Every route on one router (tests, and apps that add them all at once)."""
    router = APIRouter()
    for build in routers(host, dependencies).values():
        router.include_router(build())
    return router
