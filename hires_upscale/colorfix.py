"""Colour fix: the second pass's detail on the colours of the image that went into it.

A second pass at low denoise is meant to add detail, not to move colours; yet samplers and VAEs
drift (a warmer cast, lifted blacks, a tile of a tiled pass a shade off its neighbour). The
upscaled image that went into the pass has the user's colours, so its low frequencies are put
back under the pass's high frequencies.

- `wavelet`: an "à trous" decomposition (a B3-spline blur, its holes doubling per level, as in
  Starck and Murtagh's wavelet transform). Everything coarser than `WAVELET_LEVELS` levels (about
  2^levels pixels) comes from the reference, everything finer from the pass. It also removes
  drift between tiles, which lives at tile scale, far coarser than detail.
- `adain`: each channel's mean and standard deviation matched to the reference's, in YCbCr: its
  luma carries brightness and contrast, its two chroma channels the cast, so a contrast fix does
  not tint and a cast fix does not change contrast (in RGB the three statistics mix both). Global
  only: it cannot fix drift that differs across the picture.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .params import COLOR_FIX_MODES

#: Levels of the wavelet fix: bands coarser than about 2**5 = 32 px come from the reference.
WAVELET_LEVELS = 5
#: The B3-spline kernel of the "à trous" transform.
_B3 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
#: ITU-R BT.601 RGB -> YCbCr (full range, without the offsets: they cancel in a statistics match).
_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def color_fix(result: Image.Image, reference: Image.Image, mode: str, *, levels: int = WAVELET_LEVELS) -> Image.Image:
    """`result` (the second pass's output) with its colours taken from `reference` (the image that went
    into the pass, the same size) as `mode` says; `none` returns `result` itself."""
    if mode == "none":
        return result
    if result.size != reference.size:
        raise ValueError(f"the colour fix needs images of one size, not {result.size} and {reference.size}")
    pixels, colours = _tensor(result), _tensor(reference)
    if mode == "wavelet":
        fixed = pixels - low_pass(pixels, levels) + low_pass(colours, levels)
    elif mode == "adain":
        fixed = _match_statistics(pixels, colours)
    else:
        raise ValueError(f"colour fix {mode!r}: expected one of {', '.join(COLOR_FIX_MODES)}")
    return _image(fixed)


def low_pass(pixels: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """The coarsest band of the "à trous" transform of `pixels` (C, H, W): `levels` B3-spline blurs,
    the kernel's holes doubling each time, edges mirrored."""
    kernel = torch.tensor(_B3, dtype=pixels.dtype)
    smooth = pixels.unsqueeze(0)
    channels = pixels.shape[0]
    for level in range(levels):
        dilation = 2**level
        reach = 2 * dilation
        # mirror padding needs the image to be larger than the reach; beyond it, the edge repeats
        mode = "reflect" if min(smooth.shape[-2:]) > reach else "replicate"
        for weights, padding in ((kernel.view(1, 1, 1, 5), (reach, reach, 0, 0)),
                                 (kernel.view(1, 1, 5, 1), (0, 0, reach, reach))):
            padded = F.pad(smooth, padding, mode=mode)
            smooth = F.conv2d(padded, weights.expand(channels, 1, *weights.shape[2:]), groups=channels,
                              dilation=dilation)
    return smooth.squeeze(0)


def _match_statistics(pixels: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    to_ycbcr = _TO_YCBCR.to(pixels.dtype)
    source = torch.einsum("ij,jhw->ihw", to_ycbcr, pixels)
    target = torch.einsum("ij,jhw->ihw", to_ycbcr, colours)
    mean, std = source.mean(dim=(1, 2), keepdim=True), source.std(dim=(1, 2), keepdim=True)
    target_mean, target_std = target.mean(dim=(1, 2), keepdim=True), target.std(dim=(1, 2), keepdim=True)
    matched = (source - mean) / std.clamp_min(1e-6) * target_std + target_mean
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(to_ycbcr), matched)


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0).permute(2, 0, 1)


def _image(pixels: torch.Tensor) -> Image.Image:
    array = (pixels.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")
