"""The color fix, measured: a picture and a copy of it with a colour cast, lost contrast and fresh
fine detail (what a drifting second pass gives). After the fix the copy's coarse bands must be the
picture's and its fine bands the copy's. `python -m benchmarks.colorfix` prints the same figures."""

from __future__ import annotations

import pytest

from benchmarks.colorfix import coarse_psnr, drifted_copy, fine_correlation, half_warmer, measure, picture
from hires_upscale.colorfix import color_fix


@pytest.mark.parametrize(("mode", "colours_db"), [("wavelet", 45), ("adain", 35)])
def test_the_fix_gives_back_the_pictures_colours_and_keeps_the_copys_detail(mode, colours_db):
    original = picture(256, 256)
    copy = drifted_copy(original)
    assert coarse_psnr(copy, original) < 30  # the drift is real
    fixed = color_fix(copy, original, mode)
    assert coarse_psnr(fixed, original) >= colours_db  # adain's one global match leaves more
    # the pass's new shapes kept: a fix reaching into bands finer than ~32 px takes them away (0.95)
    assert fine_correlation(fixed, copy) >= 0.99


def test_wavelet_also_removes_drift_that_differs_across_the_picture():
    # tiles of a tiled pass a shade apart: a global fix cannot help
    original = picture(256, 256)
    shaded = half_warmer(original)
    assert coarse_psnr(color_fix(shaded, original, "wavelet"), original) >= 40
    assert coarse_psnr(color_fix(shaded, original, "adain"), original) < 40  # short of the bar


def test_none_is_the_pass_itself_and_sizes_must_match():
    original = picture(64, 64)
    assert color_fix(original, picture(64, 64, seed=2), "none") is original
    with pytest.raises(ValueError, match="one size"):
        color_fix(original, picture(32, 32), "wavelet")


def test_small_images_do_not_break_the_filter():
    tiny = picture(8, 5)
    assert color_fix(tiny, tiny, "wavelet").size == (8, 5)


def test_the_benchmark_reports_every_mode_for_both_cases():
    rows = measure(64)["rows"]
    assert {(r["case"], r["mode"]) for r in rows} == {(case, mode) for case in {r["case"] for r in rows}
                                                      for mode in ("none", "wavelet", "adain")}
