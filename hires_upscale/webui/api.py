"""HTTP routes under /hires-upscale/v1/, as a FastAPI router.

The router talks to the WebUI only through an `ApiHost` (see `service.WebUIApiHost`),
so it can be mounted on a plain FastAPI app in tests. The request models use
only what pydantic v1 (A1111) and v2 (Forge) both accept. Every bad request is
a 422 whose `detail` has the FastAPI shape: `loc` names the field.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field

from ..errors import FieldError, HiresUpscaleError, ParamsError
from ..images import decode_base64_image
from ..params import HiresParams
from ..pipeline import NamedResult

PREFIX = "/hires-upscale/v1"
#: Images per request: each one is a full second pass.
MAX_IMAGES = 16
#: Request bodies above this are refused with 413 before they are parsed (16 images of 8 MP as base64 PNG fit).
MAX_BODY_BYTES = 256 * 1024 * 1024


class LimitedBodyRoute(APIRoute):
    """Refuses an oversized body with 413 before FastAPI reads and parses it."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def limited(request: Request):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                return JSONResponse(status_code=413, content={"detail": [{
                    "loc": ["body"], "type": "value_error",
                    "msg": f"the request body is {int(declared):,} bytes; at most {MAX_BODY_BYTES:,} are accepted"}]})
            return await handler(request)

        return limited


class UpscaleRequest(BaseModel):
    images: list[str] = Field(default_factory=list, description="Images as base64 (PNG, JPEG, WebP; data: URLs "
                              "accepted). PNGs made by the WebUI carry their prompt and seed.")
    paths: list[str] = Field(default_factory=list, description="Image files inside the allowed folders (the "
                             "WebUI's output folders and those in the settings).")
    params: dict[str, Any] = Field(default_factory=dict, description="Hires upscale parameters (GET options: "
                                   "'schema'); unset ones take their defaults.")


class UpscaledImage(BaseModel):
    name: str
    image: str = Field(description="base64 PNG with its parameters text")
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

    def run(self, items: list[tuple[str, Image.Image]], params: HiresParams) -> list[NamedResult]:
        """Every item, or ItemError naming the first that cannot be used, before any work is done."""
        ...


def unprocessable(errors: list[FieldError], *location: str | int) -> HTTPException:
    """422 with one entry per field error, located like FastAPI's own validation errors."""
    detail = [{"loc": ["body", *location, e.field], "msg": e.message, "type": "value_error"} for e in errors]
    return HTTPException(status_code=422, detail=detail)


def unprocessable_at(message: str, *location: str | int) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", *location], "msg": message,
                                                   "type": "value_error"}])


def _png_base64(image: Image.Image) -> str:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if image.info.get("parameters"):
        info.add_text("parameters", image.info["parameters"])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_router(host: ApiHost, *, include_upscale: bool = True, dependencies: list[Any] | None = None) -> APIRouter:
    """The routes. `include_upscale` False leaves only `options` (the page reads it); `dependencies`
    guard the upscale route (the WebUI's --api-auth)."""
    router = APIRouter(prefix=PREFIX, tags=["Hires upscale"], route_class=LimitedBodyRoute)

    @router.get("/options")
    def options() -> dict[str, Any]:
        """Upscalers, presets, defaults, limits, the parameters' JSON schema and the advice rules."""
        return host.options()

    if not include_upscale:
        return router

    @router.post("/upscale", response_model=UpscaleResponse, dependencies=dependencies or [])
    def upscale(request: UpscaleRequest) -> UpscaleResponse:
        """Hires-upscale existing images: upscale, img2img second pass with each image's own prompt
        and seed (from its PNG info), optional sharpen."""
        try:
            params = host.base_params(request.params)
        except ParamsError as error:
            raise unprocessable(error.errors, "params") from None
        count = len(request.images) + len(request.paths)
        if count == 0:
            raise unprocessable([FieldError("images", [], "at least one image in 'images' or 'paths'")])
        if count > MAX_IMAGES:
            raise unprocessable([FieldError("images", count, f"at most {MAX_IMAGES} images per request")])
        items: list[tuple[str, Image.Image]] = []
        for index, data in enumerate(request.images):
            try:
                name = f"image {index + 1}"
                items.append((name, decode_base64_image(data, name)))
            except HiresUpscaleError as error:
                raise unprocessable_at(str(error), "images", index) from None
        for index, path in enumerate(request.paths):
            try:
                items.append(host.open_path(path))
            except HiresUpscaleError as error:
                raise unprocessable_at(str(error), "paths", index) from None
        try:
            results = host.run(items, params)
        except ItemError as error:
            # items are the images, then the paths
            images = len(request.images)
            location = ("images", error.index) if error.index < images else ("paths", error.index - images)
            raise unprocessable_at(str(error), *location) from None
        except ParamsError as error:
            raise unprocessable(error.errors, "params") from None
        except HiresUpscaleError as error:
            raise unprocessable_at(str(error), "params") from None
        return UpscaleResponse(images=[
            UpscaledImage(
                name=done.name, image=_png_base64(done.result.image), infotext=done.infotext,
                width=done.result.image.width, height=done.result.image.height,
                source_width=done.result.plan.source[0], source_height=done.result.plan.source[1],
                warnings=done.result.advice, interrupted=done.result.interrupted,
            )
            for done in results
        ])

    return router
