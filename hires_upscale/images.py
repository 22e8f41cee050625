"""Reading images the way people expect, and writing them without losing anything.

Outputs are written to a temporary file beside the target and moved into place,
so a crash leaves either the old state or a complete file, never half of one (a process
killed mid-write may leave its hidden `.NAME.*.tmp` behind; nothing but our own
temporary file is ever removed). Unless asked to, an existing file is never replaced.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .advice import Advice
from .errors import ImageLoadError, OutputExistsError
from .metadata import Record, decode_user_comment

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Larger inputs are refused before their pixels are decoded (about 8192x8192).
MAX_INPUT_PIXELS = 8192 * 8192
#: `image.info` key of the notices `open_image` leaves about what it did not keep (see `notices`).
#: Not a string, so it never becomes a PNG text chunk of an output.
NOTICES_KEY = "hires_upscale_notices"
#: `image.info` key of the file the image came from (`Source`): its format and its record.
SOURCE_KEY = "hires_upscale_source"
#: EXIF tags: the Exif IFD, and its UserComment (where the WebUI writes its infotext into JPEG/WebP/AVIF)
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at `path`, upright (EXIF orientation applied), first frame, in RGB/RGBA/L/LA.

    PNG text chunks stay available in `image.info`. Raises `ImageLoadError` naming the file.
    What was read but not kept (further frames, text chunks over Pillow's limits) is
    listed by `notices(image)`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            return _decode(stream, path)
    except OSError as error:
        raise ImageLoadError(path, error.strerror or str(error)) from None


def notices(image: Image.Image) -> list[Advice]:
    """What `open_image` left out of this image, for the user to see (the run's warnings)."""
    return list(image.info.get(NOTICES_KEY, ()))


@dataclass(frozen=True)
class Source:
    """Where an opened image came from: its file format ("PNG", "JPEG", "WEBP"...) and what the file
    holds beside its pixels."""

    format: str
    record: Record


def record_of(image: Image.Image) -> Record:
    """The file's text chunks and EXIF UserComment of an opened image (its PNG text alone for an
    image made in memory)."""
    source = image.info.get(SOURCE_KEY)
    return source.record if isinstance(source, Source) else Record(text_chunks(image))


def source_format(image: Image.Image) -> str | None:
    source = image.info.get(SOURCE_KEY)
    return source.format if isinstance(source, Source) else None


def decode_base64_image(data: str, name: str = "image") -> Image.Image:
    """An image sent as base64 (a `data:image/...;base64,` prefix is allowed), like `open_image`."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageLoadError(Path(name), "it is not valid base64") from None
    return _decode(io.BytesIO(raw), Path(name))


def _decode(stream: BinaryIO, path: Path) -> Image.Image:
    try:
        image = _read(stream, path)
    except ValueError as error:
        # Pillow refuses a whole PNG when a text chunk is over its limits (MAX_TEXT_CHUNK
        # decompressed, MAX_TEXT_MEMORY in all). The pixels are still good: read them without
        # that text, and say what was lost.
        stream.seek(0)
        kept, dropped = _without_oversized_text(stream.read())
        if not dropped:
            raise ImageLoadError(path, str(error) or type(error).__name__) from None
        try:
            image = _read(io.BytesIO(kept), path)
        except ValueError as again:
            raise ImageLoadError(path, str(again) or type(again).__name__) from None
        image.info[NOTICES_KEY] = [_text_dropped(key, size) for key, size in dropped] + notices(image)
    return image


def _read(stream: BinaryIO, path: Path) -> Image.Image:
    """One decode attempt; ValueError (Pillow's text limits among others) is left to `_decode`."""
    try:
        with Image.open(stream) as opened:
            width, height = opened.size
            if width * height > MAX_INPUT_PIXELS:
                raise ImageLoadError(path, f"{width}x{height} is more than the {MAX_INPUT_PIXELS:,} pixels allowed")
            frames = getattr(opened, "n_frames", 1)
            opened.seek(0)
            record = _record(opened)
            source = Source(opened.format or "", record)
            mode = opened.mode
            image = ImageOps.exif_transpose(opened)
            image.load()
            info = dict(opened.info)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "it is not in an image format Pillow can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageLoadError(path, str(error) or type(error).__name__) from None
    image = _normalise_mode(image)
    image.info.update({k: v for k, v in info.items() if isinstance(v, str)})
    found: list[Advice] = []
    if frames > 1:
        found.append(Advice("first_frame", "info", "image",
                            f"The file has {frames} frames; only the first is upscaled."))
    converted = _CONVERTED.get(mode)
    if converted:
        found.append(Advice("mode_converted", "info", "image", converted))
    image.info[NOTICES_KEY] = found
    image.info[SOURCE_KEY] = source
    return image


#: What reading an image of these modes changed, said to the user.
_CONVERTED = {
    "CMYK": "The image is CMYK; it was converted to RGB (without its colour profile, so colours may shift).",
    "I;16": "The image has 16 bits per channel; it was reduced to 8 bits.",
    "I;16B": "The image has 16 bits per channel; it was reduced to 8 bits.",
    "I;16L": "The image has 16 bits per channel; it was reduced to 8 bits.",
    "I": "The image has 32-bit integer values; it was reduced to 8 bits.",
    "F": "The image has floating-point values; it was converted to 8 bits.",
    "YCbCr": "The image is YCbCr; it was converted to RGB.",
    "LAB": "The image is Lab; it was converted to RGB.",
}


def _record(opened: Image.Image) -> Record:
    """What the file holds beside its pixels: PNG text chunks, the EXIF UserComment (the Exif IFD's,
    else the first IFD's, where Fooocus writes it), a GIF's comment."""
    chunks = {k: v for k, v in opened.info.items() if isinstance(v, str)}
    chunks.update({str(k): str(v) for k, v in (getattr(opened, "text", None) or {}).items()})
    comment = opened.info.get("comment")
    if isinstance(comment, bytes) and comment:
        chunks.setdefault("comment", comment.decode("utf-8", errors="replace"))
    user_comment = None
    try:
        exif = opened.getexif()
        user_comment = decode_user_comment(exif.get_ifd(EXIF_IFD).get(USER_COMMENT) or exif.get(USER_COMMENT))
    except Exception:  # a broken EXIF block must not cost the pixels; the record is then the text alone
        user_comment = None
    return Record(chunks, user_comment)


def _text_dropped(key: str, size: int | None) -> Advice:
    # The message does not name the file: every front end shows it beside the file's name.
    amount = f"{size:,} characters" if size is not None else \
        f"more than {PngImagePlugin.MAX_TEXT_CHUNK:,} bytes once decompressed"
    return Advice(
        "text_dropped", "warning", "image",
        f"Its PNG text {key!r} ({amount}) is over Pillow's limits and was dropped; the pixels are "
        "upscaled, but the prompt and settings it held cannot be recovered from this file.",
    )


def _without_oversized_text(data: bytes) -> tuple[bytes, list[tuple[str, int | None]]]:
    """The PNG `data` without the text chunks Pillow would refuse, and (keyword, size) of each dropped.

    Sizes are what Pillow counts (decoded characters); None when a compressed chunk
    is over MAX_TEXT_CHUNK, as its full size is never decompressed. Not a PNG: unchanged.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data, []
    # Read at call time: the WebUI or a user may have raised Pillow's limits.
    chunk_limit, memory_limit = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY
    kept, dropped, memory, pos = [data[:8]], [], 0, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if kind in _TEXT_CHUNKS:
            key, size = _text_size(kind, data[pos + 8:pos + 8 + length], chunk_limit)
            if size is None or memory + size > memory_limit:
                dropped.append((key, size))
                pos = end
                continue
            memory += size
        kept.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    kept.append(data[pos:])
    return b"".join(kept), dropped


def _text_size(kind: bytes, body: bytes, chunk_limit: int) -> tuple[str, int | None]:
    """Keyword and decoded length of a text chunk; None if its compressed text is over `chunk_limit`."""
    key, _, rest = body.partition(b"\0")
    name = key.decode("latin-1")
    compressed = kind == b"zTXt" or (kind == b"iTXt" and rest[:1] == b"\1")
    if kind == b"iTXt":  # flag, method, language\0, translated keyword\0, text
        rest = rest[2:].split(b"\0", 2)[-1]
    elif kind == b"zTXt":
        rest = rest[1:]
    if not compressed:
        return name, len(rest)
    inflate = zlib.decompressobj()
    try:
        text = inflate.decompress(rest, chunk_limit)
    except zlib.error:
        return name, 0  # Pillow ignores a broken compressed text; so do we
    if inflate.unconsumed_tail:
        return name, None
    return name, len(text)


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


#: The formats an output may take (`output_format: "same"` keeps these), by file suffix.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: JPEG and WebP quality of our outputs (the WebUI's own default is 80; an upscale deserves more).
LOSSY_QUALITY = 92


def output_suffix(source: Path, same_format: bool) -> str:
    """An output's suffix: PNG, or with `same_format` the input's own where it is JPEG or WebP."""
    suffix = source.suffix.lower()
    return suffix if same_format and suffix in OUTPUT_FORMATS else ".png"


#: A JPEG keeps its EXIF in one APP1 segment of at most 64 KiB (Pillow refuses more).
JPEG_EXIF_BYTES = 65533


def format_holding(fmt: str, text: dict[str, str] | None) -> str:
    """`fmt`, or PNG where a JPEG could not hold `text["parameters"]` in its EXIF (some 32,000
    characters): the generation info is kept, as the WebUI switches to PNG for a size JPEG cannot hold."""
    parameters = (text or {}).get("parameters", "")
    if fmt == "JPEG" and len(parameters.encode("utf-16-be")) + 128 > JPEG_EXIF_BYTES:
        return "PNG"
    return fmt


def encode_image(image: Image.Image, stream: BinaryIO, fmt: str, text: dict[str, str] | None = None) -> None:
    """`image` in `fmt` with its generation info where each format keeps it, as the WebUI saves: PNG
    text chunks (all of `text`); JPEG and WebP: `text["parameters"]` as the EXIF UserComment
    ("UNICODE\0" + UTF-16-BE, what the WebUI and its PNG Info read). JPEG has no alpha: flattened
    on white."""
    text = text or {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            if value.isascii():
                info.add_text(key, value)
            else:
                info.add_itxt(key, value)
        image.save(stream, format="PNG", pnginfo=info)
        return
    exif = Image.Exif()
    if text.get("parameters"):
        # the Exif IFD as a dict value: the one way every Pillow the hosts bring (9.5 to 13) writes it
        exif[EXIF_IFD] = {USER_COMMENT: b"UNICODE\0" + text["parameters"].encode("utf-16-be")}
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = flat
    image.save(stream, format=fmt, quality=LOSSY_QUALITY, exif=exif)


def save_image(
    image: Image.Image, path: str | os.PathLike[str], *, text: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Write `image` in the format its suffix names (PNG, JPEG, WebP; see `encode_image`) with its text,
    atomically; refuse to replace a file unless `overwrite`. A JPEG that cannot hold the text is
    written as .png instead (`format_holding`): the returned path says which."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower(), "PNG")
    if format_holding(fmt, text) != fmt:
        path, fmt = path.with_suffix(".png"), "PNG"
    if not overwrite and path.exists():
        raise OutputExistsError(path)
    return write_atomically(path, lambda stream: encode_image(image, stream, fmt, text), overwrite=overwrite)


def save_png(
    image: Image.Image, path: str | os.PathLike[str], *, text: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Write `image` as PNG with `text` chunks, atomically; refuse to replace a file unless `overwrite`."""
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(path)
    return write_atomically(path, lambda stream: encode_image(image, stream, "PNG", text), overwrite=overwrite)


def write_atomically(path: Path, write: Callable[[BinaryIO], None], *, overwrite: bool) -> Path:
    """`write(stream)` into a temporary file beside `path`, then moved to `path`: readers see the old
    file or the whole new one. Refuses with `OutputExistsError` to replace a file unless `overwrite`."""
    handle, temp = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
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
    return path


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`, ours alone, created with the mode the umask gives (the
    WebUI's own files are 0644 under the usual umask; `mkstemp`'s 0600 would hide ours from a
    gallery or a share). Only this name is ever removed: other writers' files are theirs."""
    for _ in range(100):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


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
