"""Tile grids with overlap, feathered blend weights, and running an op tile by tile.

A grid covers an image of any size with tiles of one size (smaller images get
one tile of their own size: never padded up to a whole tile). Neighbouring
tiles overlap by at least `overlap` pixels; the blend weights ramp across the
overlap on the sides that have a neighbour and are 1 at the image border, and
the output is sum(weight * tile) / sum(weight). So an identity op reconstructs
its input, and a model's unreliable tile edges fade out under its neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .errors import Interrupted


@dataclass(frozen=True)
class Tile:
    """One tile in input pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Grid:
    """Tiles covering a `width` x `height` image."""

    width: int
    height: int
    tile_size: int
    overlap: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def tile_width(self) -> int:
        return min(self.tile_size, self.width)

    @property
    def tile_height(self) -> int:
        return min(self.tile_size, self.height)

    @property
    def columns(self) -> int:
        return len(self.xs)

    @property
    def rows(self) -> int:
        return len(self.ys)

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def __iter__(self) -> Iterator[Tile]:
        for y in self.ys:
            for x in self.xs:
                yield Tile(x, y, self.tile_width, self.tile_height)


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Evenly spread tile starts: first at 0, last flush with the end."""
    if length <= tile:
        return (0,)
    span = length - tile
    # Enough tiles that no step exceeds tile - overlap, even after integer division.
    count = 1 + math.ceil(span / (tile - overlap))
    return tuple(i * span // (count - 1) for i in range(count))


def make_grid(width: int, height: int, tile_size: int, overlap: int) -> Grid:
    """A grid of `tile_size` tiles (or the image size, if smaller) overlapping by >= `overlap`."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot tile a {width}x{height} image")
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}")
    return Grid(width, height, tile_size, overlap,
                _starts(width, tile_size, overlap), _starts(height, tile_size, overlap))


def _ramp(length: int, ramp_in: int, ramp_out: int) -> torch.Tensor:
    """1-D weights: rising over `ramp_in`, flat 1, falling over `ramp_out`; never 0."""
    weights = torch.ones(length, dtype=torch.float32)
    if ramp_in:
        weights[:ramp_in] = (torch.arange(ramp_in, dtype=torch.float32) + 0.5) / ramp_in
    if ramp_out:
        tail = (torch.arange(ramp_out, dtype=torch.float32).flip(0) + 0.5) / ramp_out
        weights[length - ramp_out:] = torch.minimum(weights[length - ramp_out:], tail)
    return weights


def blend_weights(tile: Tile, grid: Grid, scale: int = 1) -> torch.Tensor:
    """(height*scale, width*scale) weights of one tile's output."""
    ramp = grid.overlap * scale
    w, h = tile.width * scale, tile.height * scale
    ramp_w, ramp_h = min(ramp, w // 2), min(ramp, h // 2)
    horizontal = _ramp(w, ramp_w if tile.x > 0 else 0, ramp_w if tile.x + tile.width < grid.width else 0)
    vertical = _ramp(h, ramp_h if tile.y > 0 else 0, ramp_h if tile.y + tile.height < grid.height else 0)
    return vertical[:, None] * horizontal[None, :]


def run_tiled(
    op: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    grid: Grid,
    *,
    scale: int = 1,
    input_scale: int = 1,
    batch_size: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Apply `op` (N,C,h,w) -> (N,C',h*scale,w*scale) to `image` tile by tile and blend.

    The grid counts in units of `input_scale` input pixels (a VAE encoder reads 8
    pixels per latent unit) and `scale` output pixels. `batch_size` tiles go
    through `op` at once, stacked tile by tile on the batch axis. Accumulates in
    float32 on `image`'s device. `on_tile(done, total)` reports progress;
    `should_stop()` is asked before each batch and raises `Interrupted` when it says so.
    """
    n, _, height, width = image.shape
    if (height, width) != (grid.height * input_scale, grid.width * input_scale):
        raise ValueError(f"grid is for {grid.width}x{grid.height} units of {input_scale} px, "
                         f"image is {width}x{height}")
    height, width = grid.height, grid.width
    out: torch.Tensor | None = None  # allocated once the first output tells its channels
    norm = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32, device=image.device)
    tiles = list(grid)
    for start in range(0, len(tiles), batch_size):
        if should_stop is not None and should_stop():
            raise Interrupted(f"stopped after {start} of {len(tiles)} tiles")
        batch = tiles[start:start + batch_size]
        k = input_scale
        inputs = torch.cat([image[:, :, t.y * k:(t.y + t.height) * k, t.x * k:(t.x + t.width) * k] for t in batch])
        outputs = op(inputs)
        if out is None:
            out = torch.zeros((n, outputs.shape[1], height * scale, width * scale), dtype=torch.float32,
                              device=image.device)
        for i, tile in enumerate(batch):
            weight = blend_weights(tile, grid, scale).to(image.device)
            result = outputs[i * n:(i + 1) * n].float()
            ys, xs = tile.y * scale, tile.x * scale
            region = (slice(None), slice(None), slice(ys, ys + tile.height * scale), slice(xs, xs + tile.width * scale))
            out[region] += result * weight
            norm[region] += weight
        if on_tile is not None:
            on_tile(min(start + batch_size, len(tiles)), len(tiles))
    assert out is not None  # a grid has at least one tile
    return out / norm


def fitted_grid(width: int, height: int, max_tile: int, overlap: int) -> Grid:
    """The fewest tiles of at most `max_tile` that cover the latent, each as small as that count
    allows: a 128-wide latent in tiles of up to 96 becomes 2 tiles of 72, not 2 of 96 (1.27x the
    work of one frame instead of 2.25x)."""
    overlap = min(overlap, max_tile - 1)

    def side(length: int) -> int:
        if length <= max_tile:
            return length
        count = math.ceil((length - overlap) / (max_tile - overlap))
        return math.ceil((length - overlap) / count) + overlap

    tile = max(side(width), side(height))
    return make_grid(width, height, tile, min(overlap, tile - 1))
