from __future__ import annotations

import pytest
from conftest import noise_image
from hypothesis import given
from hypothesis import strategies as st

from hires_upscale.errors import ParamsError, TargetTooLargeError
from hires_upscale.resolution import (
    DEFAULT_MAX_PIXELS,
    FAMILIES,
    apply_fit,
    find_preset,
    plan_resize,
    presets_for,
    snap,
)

sides = st.integers(16, 2048)


@given(st.floats(1, 20000))
def test_snap_is_the_nearest_multiple_of_64(value):
    snapped = snap(value)
    assert snapped % 64 == 0 and snapped >= 64
    assert abs(snapped - value) <= 32 or snapped == 64


@given(sides, sides, st.floats(1, 4))
def test_scale_mode_targets_are_multiples_of_64_near_the_request(w, h, scale):
    plan = plan_resize((w, h), mode="scale", scale=scale)
    tw, th = plan.target
    assert tw % 64 == 0 and th % 64 == 0
    assert abs(tw - w * scale) <= 33 or tw == 64
    assert abs(th - h * scale) <= 33 or th == 64


@given(sides, sides, st.integers(64, 4096), st.integers(64, 4096), st.sampled_from(["crop", "fill", "stretch"]))
def test_fit_modes_reach_the_target_without_distortion(w, h, tw, th, fit):
    plan = plan_resize((w, h), mode="size", width=tw, height=th, fit=fit, multiple=1, max_pixels=10**9)
    uw, uh = plan.upscaled
    assert plan.target == (tw, th)
    if fit == "stretch":
        assert plan.upscaled == plan.target
        return
    if fit == "crop":  # covers the target
        assert uw >= tw and uh >= th and (uw == tw or uh == th)
    else:  # fill: fits inside
        assert uw <= tw and uh <= th and (uw == tw or uh == th)
    # the source's aspect, within a pixel of rounding
    assert abs(uw * h - uh * w) <= (w + h) / 2 + max(w, h)


@given(sides, sides)
def test_one_side_given_keeps_the_aspect(w, h):
    plan = plan_resize((w, h), mode="size", width=1024, multiple=1, max_pixels=10**9)
    assert plan.target[0] == 1024
    assert abs(plan.target[1] - 1024 * h / w) <= 0.5


def test_start_square_finish_portrait():
    # "Start at 512x512, finish at any aspect": size mode with crop (or stretch, or fill).
    plan = plan_resize((512, 512), mode="size", width=832, height=1216, fit="crop")
    assert plan.target == (832, 1216) and plan.upscaled == (1216, 1216)
    image = apply_fit(noise_image(512, 512).resize(plan.upscaled), plan)
    assert image.size == (832, 1216)
    filled = plan_resize((512, 512), mode="size", width=832, height=1216, fit="fill")
    assert filled.upscaled == (832, 832)
    assert apply_fit(noise_image(832, 832), filled).size == (832, 1216)


def test_fill_extends_the_edge_pixels():
    plan = plan_resize((4, 4), mode="size", width=8, height=4, fit="fill", multiple=1)
    source = noise_image(4, 4)
    result = apply_fit(source, plan)
    assert result.getpixel((0, 1)) == source.getpixel((0, 1))
    assert result.getpixel((7, 1)) == source.getpixel((3, 1))
    assert result.crop((2, 0, 6, 4)).tobytes() == source.tobytes()


def test_snapping_is_reported():
    plan = plan_resize((500, 700), mode="scale", scale=2)
    assert plan.requested == (1000, 1400) and plan.target == (1024, 1408) and plan.snapped


def test_presets_per_family():
    for name, fam in FAMILIES.items():
        presets = presets_for(name)
        assert {"1.5x", "2x"} <= {p.name for p in presets}
        for preset in presets:
            if preset.width:
                assert preset.width % 64 == 0 and preset.height % 64 == 0
                assert preset.width * preset.height >= fam.base**2
    assert find_preset("sdxl", "Square").width == 2048
    assert plan_resize((512, 768), mode="preset", preset="2x").target == (1024, 1536)
    assert plan_resize((512, 768), mode="preset", preset="Portrait 2:3").target == (1024, 1536)
    with pytest.raises(ParamsError, match="preset"):
        plan_resize((512, 512), mode="preset", preset="10x")


def test_pixel_limit_is_a_clear_error():
    with pytest.raises(TargetTooLargeError, match="above the limit") as caught:
        plan_resize((4096, 4096), mode="scale", scale=4)
    assert caught.value.max_pixels == DEFAULT_MAX_PIXELS
    assert "16384x16384" in str(caught.value)


def test_empty_source_is_refused():
    with pytest.raises(ParamsError, match="image"):
        plan_resize((0, 10))
