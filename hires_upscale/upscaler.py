"""Image upscalers: any spandrel super-resolution model (ESRGAN, Real-ESRGAN, SwinIR, HAT,
DAT, ...), and plain Lanczos.

Both kinds answer `upscale(image, size) -> image of exactly that size`. Model
upscalers run their native scale tile by tile with feathered overlap, then
resize to the requested size with Lanczos. Tile sizes and precision come from
each model's own measured figures (calibration.py). Loaded models are cached by
path, modification time and size, so a batch loads each file once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .calibration import Calibration, calibrate, remember, remembered, setup_key
from .errors import Interrupted, ModelLoadError, is_out_of_memory
from .tiling import Grid, make_grid, run_tiled

log = logging.getLogger("hires_upscale")

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
#: Precisions a caller may ask for; "auto" follows the model's flags and the device.
PRECISIONS = ("auto", "fp32")
#: Models kept loaded at once (an ESRGAN 4x is about 67 MB in fp32).
CACHE_SIZE = 2
MIN_TILE = 64
MAX_TILE = 2048


class ImageUpscaler(Protocol):
    """Anything that turns an image into a larger one of an exact size."""

    name: str

    def upscale(
        self, image: Image.Image, size: tuple[int, int], *,
        progress: ProgressFn | None = None, should_stop: StopFn | None = None,
    ) -> Image.Image: ...


class LanczosUpscaler:
    """The always-available upscaler: PIL's Lanczos filter."""

    name = "Lanczos"

    def upscale(
        self, image: Image.Image, size: tuple[int, int], *,
        progress: ProgressFn | None = None, should_stop: StopFn | None = None,
    ) -> Image.Image:
        if should_stop is not None and should_stop():
            raise Interrupted("stopped before resizing")
        result = image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image.copy()
        if progress is not None:
            progress(1, 1)
        return result


def overlap_for(tile_size: int) -> int:
    """Tile overlap: wide enough for a model's receptive field to settle, small next to the tile."""
    return max(8, min(32, tile_size // 8))


def activation_bytes_per_pixel(scale: int, bytes_per_value: int) -> int:
    """Peak activation bytes per input pixel of an RRDB-like net, for the page's estimate before any
    model is loaded: about 64 features over a dozen live tensors at the input size, plus the
    upsampled ones at scale^2. The engine sizes tiles from each model's measured figure instead."""
    return bytes_per_value * 64 * (12 + 3 * scale**2)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so oneDNN gains from it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return "avx512_bf16" in words or "amx_bf16" in words


def choose_dtype(supports_half: bool, supports_bfloat16: bool, device: torch.device, precision: str) -> torch.dtype:
    """fp16/bf16 where the model allows it and the device gains from it, else fp32."""
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        if supports_half:
            return torch.float16
        if supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
    elif device.type == "cpu" and supports_bfloat16 and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


#: Activation memory is measured per model (calibration.py); this much more is allowed for the
#: allocator's slack and the workspaces of ops the probe does not see.
MEMORY_HEADROOM = 1.5


class ModelUpscaler:
    """A spandrel SR model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...) ready to run."""

    def __init__(self, descriptor: object, path: Path, device: torch.device, calibration: Calibration,
                 *, tile_size: int = 0) -> None:
        self.descriptor = descriptor
        self.path = path
        self.name = path.stem
        self.device = device
        self.calibration = calibration
        self.dtype = calibration.dtype
        #: tile size in input pixels; 0 = chosen per image from free memory
        self.tile_size = tile_size
        self.scale: int = descriptor.scale  # type: ignore[attr-defined]
        self.architecture: str = descriptor.architecture.id  # type: ignore[attr-defined]
        #: spandrel's SizeRequirements: minimum side, multiple_of, square
        self._requirements = descriptor.size_requirements  # type: ignore[attr-defined]
        #: spandrel's advice: "supported", "discouraged" (global context matters) or "internal"
        tiling = getattr(descriptor, "tiling", None)
        self.tiling: str = tiling.name.lower() if tiling is not None else "supported"

    def auto_tile_size(self, width: int, height: int) -> int:
        """The largest tile whose measured activations fit in a share of free memory."""
        bytes_per_pixel = self.calibration.bytes_per_pixel * MEMORY_HEADROOM
        share = 0.5 if self.device.type == "cuda" else 0.25
        # On CUDA tiles run in batches (see batch_size_for): leave room for a whole batch.
        budget = min(_available_bytes(self.device) * share, 8 * 1024**3) / self.max_batch
        side = int(math.sqrt(budget / max(bytes_per_pixel, 1.0))) // 32 * 32
        return max(MIN_TILE, min(side, MAX_TILE, max(width, height)))

    @property
    def max_batch(self) -> int:
        """Tiles per model call: batching feeds a GPU better; on the CPU it gains nothing (measured)."""
        return 4 if self.device.type == "cuda" else 1

    def grid_for(self, width: int, height: int, tile_size: int | None = None) -> Grid:
        """Tiles for an image. `tile_size` (an out-of-memory retry) wins; otherwise spandrel's advice:
        a model that tiles internally gets the whole image, one whose output needs global context
        is tiled only as far as memory requires, and the rest take the set size or the auto one."""
        whole = max(width, height)
        if self.tiling == "internal":
            tile = whole
        elif tile_size:
            tile = tile_size
        elif self.tiling == "discouraged":
            tile = max(self.tile_size, self.auto_tile_size(width, height))
        else:
            tile = self.tile_size or self.auto_tile_size(width, height)
        multiple = self._requirements.multiple_of or 1
        if multiple > 1 and tile < whole:
            tile = max(multiple, tile // multiple * multiple)  # whole windows: no padding per tile
        tile = max(tile, self._requirements.minimum or 1)
        return make_grid(width, height, tile, overlap_for(tile) if tile < whole else 0)

    def _run_model(self, batch: torch.Tensor) -> torch.Tensor:
        """The model on a batch of tiles; spandrel pads to the model's size needs and crops back."""
        batch = batch.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.descriptor(batch)  # type: ignore[operator]

    def upscale_tensor(self, image: torch.Tensor, *, progress: ProgressFn | None = None,
                       should_stop: StopFn | None = None) -> torch.Tensor:
        """(1,C,H,W) float in [0,1] -> (1,C,H*scale,W*scale) float32, tiled; smaller tiles on OOM."""
        _, _, height, width = image.shape
        tile = None
        while True:
            grid = self.grid_for(width, height, tile)
            try:
                return run_tiled(self._run_model, image.to(self.device), grid, scale=self.scale,
                                 batch_size=min(self.max_batch, len(grid)), on_tile=progress,
                                 should_stop=should_stop)
            except RuntimeError as error:
                if not is_out_of_memory(error) or grid.tile_size <= MIN_TILE or self.tiling == "internal":
                    raise
                tile = max(MIN_TILE, grid.tile_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def upscale(
        self, image: Image.Image, size: tuple[int, int], *,
        progress: ProgressFn | None = None, should_stop: StopFn | None = None,
    ) -> Image.Image:
        """`image` at exactly `size`: the model's native scale, then Lanczos. Alpha is resized apart."""
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        gray = self.descriptor.input_channels == 1  # type: ignore[attr-defined]
        pixels = image.convert("L" if gray else "RGB")
        result = tensor_to_image(self.upscale_tensor(image_to_tensor(pixels), progress=progress,
                                                     should_stop=should_stop))
        if result.mode != ("L" if gray else "RGB"):
            result = result.convert("L" if gray else "RGB")
        if result.size != size:
            result = result.resize(size, Image.Resampling.LANCZOS)
        if gray and image.mode not in ("L", "LA"):
            result = result.convert("RGB")
        if alpha is not None:
            result = result.convert("RGBA" if result.mode == "RGB" else "LA")
            result.putalpha(alpha.resize(size, Image.Resampling.LANCZOS))
        return result


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit L or RGB image as a (1,C,H,W) float32 tensor in [0,1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """A (1,C,H,W) tensor in [0,1] as an 8-bit image (1 channel: L, 3: RGB)."""
    array = tensor[0].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], "L")
    return Image.fromarray(array[:, :, :3], "RGB")


# -- loading ----------------------------------------------------------------

_cache: OrderedDict[tuple, object] = OrderedDict()
_cache_lock = threading.Lock()


def _read_descriptor(path: Path) -> object:
    """spandrel's descriptor of `path` on the CPU in fp32, or ModelLoadError saying why not."""
    try:
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError
    except ImportError as error:
        raise ModelLoadError(path, f"spandrel is not installed ({error})") from error
    if not path.is_file():
        raise ModelLoadError(path, "no such file")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        allowed = ", ".join(MODEL_SUFFIXES)
        raise ModelLoadError(path, f"unsupported file type {path.suffix!r}; expected one of {allowed}")
    try:
        descriptor = ModelLoader(device="cpu").load_from_file(str(path))
    except UnsupportedModelError:
        raise ModelLoadError(path, "spandrel does not recognise the model's architecture") from None
    except Exception as error:  # a corrupt or foreign file fails in many ways: name them all alike
        raise ModelLoadError(path, f"the file is not a readable model ({type(error).__name__}: {error})") from error
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelLoadError(path, f"it is a {descriptor.purpose} model, not an upscaler")  # type: ignore[attr-defined]
    if descriptor.purpose != "SR":
        raise ModelLoadError(
            path, f"it is a {descriptor.purpose} model ({descriptor.architecture.name}, scale "
            f"{descriptor.scale}), not a super-resolution upscaler")
    if descriptor.input_channels not in (1, 3) or descriptor.output_channels != descriptor.input_channels:
        raise ModelLoadError(
            path, f"it maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
            "only RGB or grayscale upscalers are supported")
    return descriptor


def _block_sizes_from_weights(model: torch.nn.Module) -> None:
    """Dense blocks that carry their widths as `nf` / `gc` get them from their own convolutions.

    Forge Neo replaces spandrel's RRDB block code with a faster one that reads those two attributes,
    set from keyword arguments spandrel passes positionally: every block then claims 64 / 32, and any
    ESRGAN of another width (lite models, ours in the tests) fails in its first block. Blocks without
    the attributes (spandrel's own code) are left alone."""
    for block in model.modules():
        if not (hasattr(block, "nf") and hasattr(block, "gc") and isinstance(getattr(block, "conv1", None),
                                                                             torch.nn.Module)):
            continue
        conv = next((m for m in block.conv1.modules() if isinstance(m, torch.nn.Conv2d)), None)
        if conv is not None:
            block.nf, block.gc = conv.in_channels, conv.out_channels


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    tile_size: int = 0,
) -> ModelUpscaler:
    """A ready upscaler for a model file; cached by (path, mtime, size, device, dtype).

    Raises `ModelLoadError` naming the file and the reason when it cannot be used.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    target = torch.device(device) if device is not None else default_device()
    try:
        path = Path(path).expanduser().resolve()
        stat = path.stat()
    except (ValueError, RuntimeError) as error:  # a NUL byte, "~nosuchuser": not a usable file name
        raise ModelLoadError(Path(path), f"not a usable file name ({error})") from None
    except OSError as error:
        raise ModelLoadError(path, "no such file" if isinstance(error, FileNotFoundError) else str(error)) from None
    file_key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = next(((k, v) for k, v in _cache.items() if k[:3] == file_key and k[3] == str(target)
                       and k[4] == precision), None)
        if cached is not None:
            _cache.move_to_end(cached[0])
            descriptor, calibration = cached[1]
            return ModelUpscaler(descriptor, path, target, calibration, tile_size=tile_size)
    descriptor = _read_descriptor(path)
    _block_sizes_from_weights(descriptor.model)  # type: ignore[attr-defined]
    reduced = choose_dtype(descriptor.supports_half, descriptor.supports_bfloat16, target, precision)  # type: ignore[attr-defined]
    descriptor.to(target)  # type: ignore[attr-defined]
    descriptor.model.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
    descriptor.eval()  # type: ignore[attr-defined]
    # the probe costs seconds for a large model: measured once per file and setup, then remembered
    key = setup_key(path, target, reduced)
    known = remembered(key)
    descriptor, calibration = calibrate(descriptor, target, reduced, known=known)
    if known is None:
        remember(key, calibration)
    _log_calibration(path, descriptor, target, calibration)
    with _cache_lock:
        _cache[(*file_key, str(target), precision)] = (descriptor, calibration)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return ModelUpscaler(descriptor, path, target, calibration, tile_size=tile_size)


def _log_calibration(path: Path, descriptor: object, device: torch.device, calibration: Calibration) -> None:
    facts = (f"{path.name}: {descriptor.architecture.id} {descriptor.scale}x, "  # type: ignore[attr-defined]
             f"{str(calibration.dtype).removeprefix('torch.')} on {device}, "
             f"{calibration.bytes_per_pixel / 1024:.1f} KiB of activations per input pixel")
    refused = f"; fp32 because {calibration.reduced_refused}" if calibration.reduced_refused else ""
    log.info("hires upscale: %s%s", facts, refused)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def resolve_upscaler(
    name_or_path: str, *, device: str | torch.device | None = None, precision: str = "auto", tile_size: int = 0
) -> ImageUpscaler:
    """`lanczos` (any case) or a path to a model file."""
    if name_or_path.strip().lower() == "lanczos":
        return LanczosUpscaler()
    return load_model(name_or_path, device=device, precision=precision, tile_size=tile_size)
