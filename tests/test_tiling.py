from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hires_upscale.errors import Interrupted
from hires_upscale.tiling import blend_weights, make_grid, run_tiled


@st.composite
def grids(draw):
    tile = draw(st.integers(8, 96))
    overlap = draw(st.integers(0, tile - 1))
    return draw(st.integers(1, 300)), draw(st.integers(1, 300)), tile, overlap


@given(grids())
def test_tiles_cover_every_pixel_with_the_overlap_asked(spec):
    width, height, tile, overlap = spec
    grid = make_grid(width, height, tile, overlap)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for t in grid:
        assert t.x >= 0 and t.y >= 0 and t.x + t.width <= width and t.y + t.height <= height
        assert t.width == min(tile, width) and t.height == min(tile, height)
        covered[t.y:t.y + t.height, t.x:t.x + t.width] += 1
    assert bool((covered > 0).all())
    for starts, tile_len in ((grid.xs, grid.tile_width), (grid.ys, grid.tile_height)):
        for a, b in zip(starts, starts[1:], strict=False):
            assert a + tile_len - b >= overlap  # neighbours overlap by at least `overlap`


def test_images_smaller_than_a_tile_get_one_tile_of_their_own_size():
    grid = make_grid(50, 30, 192, 8)
    assert list(grid) == [next(iter(grid))] and (grid.tile_width, grid.tile_height) == (50, 30)


@settings(max_examples=60)
@given(grids(), st.sampled_from([1, 2, 4]), st.integers(1, 4), st.integers(0, 2**31))
def test_identity_op_reconstructs_the_input(spec, scale, batch, seed):
    width, height, tile, overlap = spec
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    grid = make_grid(width, height, tile, overlap)

    def upsample(x):  # identity at scale 1, exact nearest upsampling otherwise
        return x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    result = run_tiled(upsample, image, grid, scale=scale, batch_size=batch)
    torch.testing.assert_close(result, upsample(image), rtol=0, atol=1e-4)  # float32 sums; 1/40 of an 8-bit level


def test_blend_weights_fade_only_towards_neighbours():
    grid = make_grid(100, 40, 60, 20)
    left, right = list(grid)
    w_left, w_right = blend_weights(left, grid), blend_weights(right, grid)
    assert bool((w_left > 0).all()) and bool((w_right > 0).all())
    assert torch.all(w_left[:, 0] == 1) and w_left[0, -1] < 0.1  # image border flat, inner edge faded
    assert torch.all(w_right[:, -1] == 1) and w_right[0, 0] < 0.1


def test_progress_and_interruption():
    grid = make_grid(64, 64, 32, 8)
    seen = []
    run_tiled(lambda x: x, torch.rand(1, 1, 64, 64), grid, on_tile=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 9) for i in range(1, 10)]  # 3x3: two tiles of 32 could not overlap
    asked = iter([False, False, True])
    with pytest.raises(Interrupted, match="2 of 9"):
        run_tiled(lambda x: x, torch.rand(1, 1, 64, 64), grid, should_stop=lambda: next(asked))


def test_bad_grids_are_refused():
    with pytest.raises(ValueError):
        make_grid(0, 10, 32, 8)
    with pytest.raises(ValueError):
        make_grid(10, 10, 32, 32)
