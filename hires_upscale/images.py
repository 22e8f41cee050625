"""Reading images the way people expect, and writing them without losing anything.

Outputs are written to a temporary file beside the target and moved into place,
so a crash leaves either the old state or a complete file, never half of one.
Unless asked to, an existing file is never replaced.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
from glob import escape as glob_escape
from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin

from .errors import ImageLoadError, OutputExistsError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Larger inputs are refused before their pixels are decoded (about 8192x8192).
MAX_INPUT_PIXELS = 8192 * 8192


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at `path`, upright (EXIF orientation applied), first frame, in RGB/RGBA/L/LA.

    PNG text chunks stay available in `image.info`. Raises `ImageLoadError` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            return _decode(stream, path)
    except OSError as error:
        raise ImageLoadError(path, error.strerror or str(error)) from None


def decode_base64_image(data: str, name: str = "image") -> Image.Image:
    """An image sent as base64 (a `data:image/...;base64,` prefix is allowed), like `open_image`."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageLoadError(Path(name), "it is not valid base64") from None
    return _decode(io.BytesIO(raw), Path(name))


def _decode(stream, path: Path) -> Image.Image:
    try:
        with Image.open(stream) as opened:
            width, height = opened.size
            if width * height > MAX_INPUT_PIXELS:
                raise ImageLoadError(path, f"{width}x{height} is more than the {MAX_INPUT_PIXELS:,} pixels allowed")
            opened.seek(0)
            info = dict(opened.info)
            image = ImageOps.exif_transpose(opened)
            image.load()
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(path, str(error) or type(error).__name__) from None
    image = _normalise_mode(image)
    image.info.update({k: v for k, v in info.items() if isinstance(v, str)})
    return image


def _normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit integer grayscale: keep the top 8 bits of the range.
        return image.point(lambda v: v / 256).convert("L")
    if image.mode == "PA":
        return image.convert("RGBA")
    return image.convert("RGB")


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The PNG text chunks (tEXt/iTXt/zTXt) of an opened image, e.g. the WebUI's "parameters"."""
    text = getattr(image, "text", None)
    if isinstance(text, dict) and text:
        return {str(k): str(v) for k, v in text.items()}
    return {k: v for k, v in image.info.items() if isinstance(v, str)}


def save_png(
    image: Image.Image, path: str | os.PathLike[str], *, text: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Write `image` as PNG with `text` chunks, atomically; refuse to replace a file unless `overwrite`."""
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG", pnginfo=info)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            _move_without_replacing(temp, path)
    except FileExistsError:
        temp.unlink(missing_ok=True)
        raise OutputExistsError(path) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _remove_leftovers(path)
    return path


def _remove_leftovers(path: Path) -> None:
    """Temporary files of earlier writes of `path` that a killed process left behind."""
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _move_without_replacing(temp: Path, path: Path) -> None:
    # link() fails if the name appeared meanwhile, where rename() would replace it.
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links on this filesystem (FAT, some shares): claim the name, then move.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(temp, path)
        return
    temp.unlink()
