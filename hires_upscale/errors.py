"""Every refusal the core makes has a name, and says what is wrong and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HiresUpscaleError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One invalid parameter: which field, the value given, and what is allowed."""

    field: str
    value: Any
    allowed: str

    @property
    def message(self) -> str:
        return f"{self.field}: {self.value!r} is not allowed; expected {self.allowed}"

    def as_dict(self) -> dict[str, Any]:
        value = self.value if isinstance(self.value, (str, int, float, bool, type(None))) else repr(self.value)
        return {"field": self.field, "value": value, "allowed": self.allowed, "message": self.message}


class ParamsError(HiresUpscaleError):
    """Parameters failed validation; `errors` lists every problem, not just the first."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class TargetTooLargeError(HiresUpscaleError):
    """The planned output has more pixels than the configured limit."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"target {width}x{height} is {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} pixels; choose a smaller scale or size"
        )
        self.width, self.height, self.max_pixels = width, height, max_pixels


class ModelLoadError(HiresUpscaleError):
    """A model file could not be used as an upscaler."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot use {Path(path).name} as an upscaler: {reason}")
        self.path, self.reason = Path(path), reason


class ImageLoadError(HiresUpscaleError):
    """A file could not be read as an image."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {Path(path).name} as an image: {reason}")
        self.path, self.reason = Path(path), reason


class OutputExistsError(HiresUpscaleError):
    """Writing would replace a file that is already there."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists; not replacing it (use --overwrite to allow)")
        self.path = Path(path)


class UpscalerFailed(HiresUpscaleError):
    """An upscaler ran but did not upscale (the WebUI's own upscalers log their error and hand the
    input back); the run must not pass a plain resize off as that upscaler's work."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"the upscaler {name} failed: {reason}")
        self.name, self.reason = name, reason


class SecondPassFailed(HiresUpscaleError):
    """The host's img2img ended without the images it was asked for (typically an extension
    running in the pass stopped it); the first pass's images are kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the second pass failed: {reason}")
        self.reason = reason


class Interrupted(HiresUpscaleError):
    """The caller asked to stop; raised between tiles or steps, never mid-write."""


class OutOfMemory(HiresUpscaleError):
    """A stage ran out of device memory with nothing left to fall back to; says what to change."""

    def __init__(self, stage: str, size: tuple[int, int], remedy: str) -> None:
        super().__init__(f"the {stage} ran out of memory at {size[0]}x{size[1]}: {remedy}")
        self.stage = stage


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device or host allocator running out of memory."""
    # torch.cuda.OutOfMemoryError subclasses RuntimeError; CPU allocators raise a plain RuntimeError.
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
