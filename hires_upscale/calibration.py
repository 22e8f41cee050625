"""How a model file runs, measured once when it loads: the precision it is kept in, and the
activation memory each input pixel costs.

Both differ per architecture, and per spandrel version, in ways no flag says. A transformer
(SwinIR, HAT, DAT) holds several times an RRDB's activations per pixel. Some architectures flagged
as bfloat16-capable build fp32 attention masks at sizes other than their training size and then
fail (SwinIR in spandrel 0.4, HAT in 0.3, the WebUI's). So a small probe picture, at a size that is
neither a training size nor a multiple of the usual windows, runs once in fp32 and once in the
reduced precision the device gains from. The reduced one is kept only if it runs and its output is
`REDUCED_MIN_PSNR` or better against fp32's; an error of that size costs a real model's quality (25-35 dB
against the truth) well under 1 dB.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import is_out_of_memory

#: The least PSNR (dB) of a reduced-precision output against fp32's for the reduced one to be used.
REDUCED_MIN_PSNR = 45.0
#: The probe's side: 40 is no training size (48/64/96...) and no multiple of 16-pixel windows.
PROBE_SIDE = 40
#: Used when the probe cannot count (no dispatch modes in this torch): a HAT-M's fp32 figure, the
#: largest of the families measured (docs/benchmarks.md), so tiles err on the small side.
FALLBACK_BYTES_PER_PIXEL = 48_000.0


@dataclass(frozen=True)
class Calibration:
    """What the probe found for one model on one device."""

    dtype: torch.dtype
    #: peak bytes of the tensors one forward creates, per input pixel, in `dtype`
    bytes_per_pixel: float
    #: PSNR (dB) of the reduced precision's probe output against fp32's; None when none was tried
    #: or it failed
    reduced_psnr: float | None = None
    #: why the reduced precision the device gains from was not kept; "" when kept or not tried
    reduced_refused: str = ""


def probe_picture(channels: int, side: int = PROBE_SIDE) -> torch.Tensor:
    """A fixed picture with smooth colour and fine detail, (1, channels, side, side) in [0, 1]."""
    ramp = torch.linspace(0, 1, side)
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    detail = torch.rand((channels, side, side), generator=torch.Generator().manual_seed(1234))
    smooth = torch.stack([(x + y) / 2, x, 1 - y][:channels]) if channels == 3 else ((x + y) / 2)[None]
    return (0.7 * smooth + 0.3 * detail).unsqueeze(0)


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]; inf when equal."""
    mse = float(torch.mean((reference.float() - other.float()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _counting_mode() -> Any:
    """A dispatch mode that tracks the peak bytes of the storages ops create; None without one."""
    try:
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
    except ImportError:
        return None

    class PeakBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[Any, int]] = {}
            self.now = 0
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
                self.now -= self.live.pop(key)[1]
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    storage = tensor.untyped_storage()
                    ref = StorageWeakRef(storage)
                    if ref.cdata not in self.live:
                        self.live[ref.cdata] = (ref, storage.nbytes())
                        self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            return out

    return PeakBytes()


def _run_counted(descriptor: Any, picture: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The model's output on `picture`, and the peak bytes per input pixel it created."""
    mode = _counting_mode()
    pixels = picture.shape[-1] * picture.shape[-2]
    if mode is None:
        return descriptor(picture), FALLBACK_BYTES_PER_PIXEL * picture.element_size() / 4
    with mode:
        output = descriptor(picture)
    return output, mode.peak / pixels


def cache_file() -> Path:
    """Where probes measured before are kept (HIRES_UPSCALE_CACHE, else the user's cache folder)."""
    base = os.environ.get("HIRES_UPSCALE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "sd-webui-hires-upscale"
    return Path(base) / "calibrations.json"


def setup_key(path: Path, device: torch.device, reduced: torch.dtype) -> str:
    """What a probe's answer depends on: the file as it is now, the device, the precision tried and the
    bar it must pass, torch's and spandrel's versions (their kernels and architecture code decide both
    figures)."""
    import spandrel

    stat = path.stat()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return "|".join(map(str, (path, stat.st_size, stat.st_mtime_ns, where, reduced, REDUCED_MIN_PSNR,
                              torch.__version__, getattr(spandrel, "__version__", "?"))))


def remembered(key: str) -> Calibration | None:
    """A probe's answer from an earlier session, if this setup was probed before."""
    try:
        found = json.loads(cache_file().read_text()).get(key)
        return Calibration(**{**found, "dtype": getattr(torch, found["dtype"])}) if found else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def remember(key: str, calibration: Calibration) -> None:
    """Keep a probe's answer for later sessions (a cache: failing to write it costs only time)."""
    from .images import write_atomically

    file = cache_file()
    try:
        known = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError):
        known = {}
    known[key] = {**asdict(calibration), "dtype": str(calibration.dtype).removeprefix("torch.")}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(file, lambda stream: stream.write(json.dumps(known, indent=1).encode()), overwrite=True)
    except OSError:
        pass


def calibrate(descriptor: Any, device: torch.device, reduced: torch.dtype, *,
              known: Calibration | None = None) -> tuple[Any, Calibration]:
    """The descriptor to run (fp32 as given, or a copy in `reduced`) and what the probe measured.

    `descriptor` is a spandrel model in fp32 on `device`; `reduced` the precision the device and
    the model's flags allow (fp32 for none). `known`: what a probe of this setup found before
    (`remembered`): then no probe runs. Out of memory is raised: nothing can run then.
    """
    if known is not None:
        if known.dtype != torch.float32:
            descriptor.to(known.dtype)
        return descriptor, known
    side = max(PROBE_SIDE, descriptor.size_requirements.minimum or 0)
    picture = probe_picture(descriptor.input_channels, side).to(device)
    reference, fp32_bytes = _run_counted(descriptor, picture)
    if reduced == torch.float32:
        return descriptor, Calibration(torch.float32, fp32_bytes)
    name = str(reduced).removeprefix("torch.")
    trial = copy.deepcopy(descriptor)
    trial.to(reduced)
    try:
        output, reduced_bytes = _run_counted(trial, picture.to(reduced))
    except RuntimeError as error:
        if is_out_of_memory(error):
            raise
        reason = f"{name} fails in this architecture's code ({str(error).splitlines()[0][:160]})"
        return descriptor, Calibration(torch.float32, fp32_bytes, reduced_refused=reason)
    quality = psnr(reference, output)
    if quality < REDUCED_MIN_PSNR:
        reason = f"{name} output is {quality:.1f} dB from fp32's, under {REDUCED_MIN_PSNR:.0f} dB"
        return descriptor, Calibration(torch.float32, fp32_bytes, quality, reason)
    return trial, Calibration(reduced, reduced_bytes, quality)
