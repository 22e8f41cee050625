"""The WebUI's built-in ESRGAN path, rewritten here as the baseline to measure against.

What the WebUI (v1.8-v1.10) does for every image, reproduced step by step:
- load the model file from disk again (no cache), fp32 on the CPU (fp16 only for
  R-ESRGAN on CUDA without --no-half);
- cut the image into 192 px tiles overlapping by 8 px, placed like its
  `split_grid` (a tile is never smaller: an image smaller than a tile is padded
  with black, on the left/top, to a whole tile);
- run the tiles one at a time in BGR order, and paste them back with linear
  blends over the overlap, row by row, like its `combine_grid`;
- always run the model's full scale, then resize to the target with Lanczos.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TILE = 192
OVERLAP = 8


def _tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1) if count > 1 else 0
    origins = []
    for i in range(count):
        start = int(i * step)
        if start + tile >= length:  # the last tile (or the only one, for a small image) ends at the edge
            start = length - tile
        origins.append(start)
    return origins


def _run_tile(model: torch.nn.Module, tile: Image.Image) -> Image.Image:
    bgr = np.asarray(tile.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)
    weights = next(model.parameters(), None)  # where and in what precision the model runs
    device, dtype = (weights.device, weights.dtype) if weights is not None else ("cpu", torch.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(bgr) / 255).unsqueeze(0).to(device, dtype)
    with torch.inference_mode():
        out = model(tensor)[0].float().clamp_(0, 1).cpu().numpy()
    rgb = (255.0 * np.moveaxis(out, 0, 2)).round().astype(np.uint8)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _blend_mask(width: int, height: int, horizontal: bool, overlap: int) -> Image.Image:
    ramp = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    mask = np.tile(ramp, (height, 1)) if horizontal else np.tile(ramp[:, None], (1, width))
    return Image.fromarray(mask, "L")


def tiled_upscale(model: torch.nn.Module, image: Image.Image, scale: int) -> Image.Image:
    """One pass of the model over 192 px tiles, pasted back with linear blends."""
    width, height = image.size
    xs, ys = _tile_origins(width, TILE, OVERLAP), _tile_origins(height, TILE, OVERLAP)
    tile, overlap = TILE * scale, OVERLAP * scale
    out_w, out_h = width * scale, height * scale
    result = Image.new("RGB", (out_w, out_h))
    column_mask = _blend_mask(overlap, tile, True, overlap)
    row_mask = _blend_mask(out_w, overlap, False, overlap)
    for row_index, y in enumerate(ys):
        row = Image.new("RGB", (out_w, tile))
        for col_index, x in enumerate(xs):
            upscaled = _run_tile(model, image.crop((x, y, x + TILE, y + TILE)))
            if col_index == 0:
                row.paste(upscaled, (x * scale, 0))
                continue
            row.paste(upscaled.crop((0, 0, overlap, tile)), (x * scale, 0), mask=column_mask)
            row.paste(upscaled.crop((overlap, 0, tile, tile)), (x * scale + overlap, 0))
        if row_index == 0:
            result.paste(row, (0, y * scale))
            continue
        result.paste(row.crop((0, 0, out_w, overlap)), (0, y * scale), mask=row_mask)
        result.paste(row.crop((0, overlap, out_w, tile)), (0, y * scale + overlap))
    return result


def builtin_upscale(model_path: Path, image: Image.Image, size: tuple[int, int], *, device: str = "cpu",
                    half: bool = False) -> Image.Image:
    """The whole built-in path for one image: reload, full-scale tiles, Lanczos to `size`. On CUDA the
    WebUI runs fp16 where the model supports it (`half`), without --no-half."""
    from spandrel import ModelLoader

    descriptor = ModelLoader(device=device).load_from_file(str(model_path))
    model = descriptor.model.eval()
    model = model.half() if half and descriptor.supports_half else model.float()
    result = image
    for _ in range(3):  # the WebUI repeats passes until the target is reached (at most 3)
        if result.width >= size[0] and result.height >= size[1]:
            break
        result = tiled_upscale(model, result, descriptor.scale)
    return result.resize(size, Image.Resampling.LANCZOS) if result.size != size else result
