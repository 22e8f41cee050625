"""Random-weight spandrel models, built and saved by the tests themselves.

Works with spandrel 0.3 (the WebUI's) and 0.4, whose architecture classes
changed names.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import torch


def _arch_class(module_name: str, *names: str) -> type:
    module = __import__(f"spandrel.architectures.{module_name}", fromlist=list(names))
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"none of {names} in spandrel.architectures.{module_name}")


def rrdb(scale: int = 4, *, filters: int = 64, blocks: int = 23, seed: int = 0) -> torch.nn.Module:
    """An ESRGAN RRDBNet; the defaults are the full-size 4x model (23 blocks, 64 features)."""
    torch.manual_seed(seed)
    cls = _arch_class("ESRGAN", "ESRGAN", "RRDBNet")
    return cls(in_nc=3, out_nc=3, num_filters=filters, num_blocks=blocks, scale=scale).eval()


def compact(scale: int = 2, *, features: int = 16, convs: int = 4, seed: int = 0) -> torch.nn.Module:
    """A Real-ESRGAN SRVGGNetCompact."""
    torch.manual_seed(seed)
    cls = _arch_class("Compact", "Compact", "SRVGGNetCompact")
    return cls(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convs, upscale=scale).eval()


def swinir(scale: int = 4, *, dim: int = 24, depths: int = 2, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    """A SwinIR (window 8, pixel-shuffle upsampler); SwinIR-M is dim 180, 6 groups of 6 blocks."""
    torch.manual_seed(seed)
    cls = _arch_class("SwinIR", "SwinIR")
    return cls(img_size=64, embed_dim=dim, depths=[blocks] * depths, num_heads=[6 if dim % 6 == 0 else 2] * depths,
               window_size=8, mlp_ratio=2.0, upscale=scale, upsampler="pixelshuffle",
               resi_connection="1conv").eval()


def hat(scale: int = 4, *, dim: int = 24, depths: int = 2, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    """A HAT (window 16, overlapping cross-attention); HAT-M is dim 180, 6 groups of 6 blocks."""
    torch.manual_seed(seed)
    cls = _arch_class("HAT", "HAT")
    return cls(img_size=64, embed_dim=dim, depths=[blocks] * depths, num_heads=[6 if dim % 6 == 0 else 2] * depths,
               window_size=16, compress_ratio=3, squeeze_factor=6 if dim < 60 else 30, mlp_ratio=2.0,
               upscale=scale, upsampler="pixelshuffle", resi_connection="1conv").eval()


def dat(scale: int = 4, *, dim: int = 24, depths: int = 2, blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    """A DAT (alternating spatial and channel attention); DAT's full size is dim 180, 6 groups of 6."""
    torch.manual_seed(seed)
    cls = _arch_class("DAT", "DAT")
    return cls(img_size=64, embed_dim=dim, depth=[blocks] * depths, num_heads=[6 if dim % 6 == 0 else 2] * depths,
               split_size=[8, 32] if dim >= 60 else [4, 8], expansion_factor=2.0, upscale=scale,
               upsampler="pixelshuffle", resi_connection="1conv").eval()


def dncnn(seed: int = 0) -> torch.nn.Module:
    """A DnCNN denoiser: a real model spandrel loads, but not an upscaler."""
    torch.manual_seed(seed)
    cls = _arch_class("DnCNN", "DnCNN")
    return cls(in_nc=3, out_nc=3, nc=16, nb=5).eval()


def save_pth(model: torch.nn.Module, path: Path) -> Path:
    """Save a state dict as .pth the way older torch did.

    Newer torch adds archive entries (`.format_version`, `.storage_alignment`,
    `byteorder`, ...) that the WebUI's safe unpickler rejects (v1.6 allows only
    data.pkl, version and data/N); keeping just those makes a file every torch
    and every WebUI version loads.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            if _HOST_ALLOWED_ENTRY.match(item.filename):
                target.writestr(item, source.read(item.filename))
    return path


_HOST_ALLOWED_ENTRY = re.compile(r"^[^/]+/((data/\d+)|version|data\.pkl)$")


def save_safetensors(model: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
