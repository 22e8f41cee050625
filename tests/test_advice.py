from __future__ import annotations

import json

from hires_upscale.advice import RULES, evaluate, rules_as_data
from hires_upscale.params import HiresParams
from hires_upscale.plan import make_plan
from hires_upscale.resolution import find_preset, presets_for


def codes(params: HiresParams, source=(512, 512), family="sd15", steps=20) -> set[str]:
    return {a.code for a in make_plan(source, params, family, first_pass_steps=steps).advice}


def test_recommended_settings_get_no_warning():
    assert codes(HiresParams(enabled=True, upscaler="4x-UltraSharp", denoise=0.3)) == set()


def test_latent_below_half_denoise_is_blurry():
    advice = make_plan((512, 512), HiresParams(upscaler="Latent", denoise=0.3)).advice
    assert [a.code for a in advice] == ["latent_low_denoise"]
    assert advice[0].field == "denoise" and advice[0].level == "warning" and "0.3" in advice[0].message
    assert codes(HiresParams(upscaler="Latent", denoise=0.55)) == set()


def test_high_denoise_with_a_model_hallucinates():
    assert "high_denoise" in codes(HiresParams(upscaler="4x-UltraSharp", denoise=0.6))
    assert "high_denoise" not in codes(HiresParams(upscaler="Latent", denoise=0.6))


def test_more_than_2x_in_one_pass():
    assert "large_pass_scale" in codes(HiresParams(scale=2.5))
    assert "large_pass_scale" not in codes(HiresParams(scale=2.0))


def test_too_large_for_the_family_suggests_tiled_mode():
    assert "too_large_for_family" in codes(HiresParams(scale=2, tiled="off"), source=(1024, 1024))
    assert "too_large_for_family" not in codes(HiresParams(scale=2, tiled="auto"), source=(1024, 1024))
    assert "too_large_for_family" not in codes(HiresParams(scale=2, tiled="off"), source=(1024, 1024), family="sdxl")


def test_non_multiple_of_64_is_snapped_and_said():
    advice = make_plan((512, 512), HiresParams(resize_mode="size", width=1000, height=1000)).advice
    snapped = next(a for a in advice if a.code == "snapped")
    assert snapped.message == "1000x1000 is not a multiple of 64: snapped to 1024x1024."


def test_hires_steps_far_above_first_pass():
    assert "many_hires_steps" in codes(HiresParams(hires_steps=60), steps=20)
    assert "many_hires_steps" not in codes(HiresParams(hires_steps=30), steps=20)
    assert "many_hires_steps" not in codes(HiresParams(hires_steps=60), steps=None)


def test_rules_as_data_give_the_same_answers_as_the_rules():
    data = json.loads(json.dumps(rules_as_data()))
    assert [r["code"] for r in data] == [r.code for r in RULES]
    facts = make_plan((512, 512), HiresParams(upscaler="Latent", denoise=0.2, scale=3.5, tiled="off")).facts()
    ops = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}

    def holds(name, op, operand):
        value = facts.get(name)
        operand = facts.get(operand["fact"]) if isinstance(operand, dict) else operand
        return value is not None and operand is not None and ops[op](value, operand)

    from_data = [r["code"] for r in data if all(holds(*clause) for clause in r["when"])]
    assert from_data == [a.code for a in evaluate(facts)] == ["latent_low_denoise", "large_pass_scale",
                                                             "too_large_for_family"]


def test_flow_families_get_their_own_denoise_range_and_limit():
    # Flux keeps its composition to about 0.65; SD1.5 redraws past 0.5
    assert "high_denoise" in codes(HiresParams(upscaler="4x-UltraSharp", denoise=0.6))
    flux = make_plan((1024, 1024), HiresParams(upscaler="4x-UltraSharp", denoise=0.6), "flux").advice
    assert [a.code for a in flux] == ["flow_denoise"]
    assert "0.2-0.5 refines detail" in flux[0].message and "past 0.65" in flux[0].message
    assert "high_denoise" in codes(HiresParams(upscaler="4x-UltraSharp", denoise=0.7), source=(1024, 1024),
                                   family="flux")
    # a strongly shifted schedule (Z-Image, Flux.2, Lumina 2, Wan) starts noisier: its range sits lower
    assert "high_denoise" in codes(HiresParams(upscaler="4x-UltraSharp", denoise=0.45), source=(1024, 1024),
                                   family="zimage")
    assert codes(HiresParams(upscaler="4x-UltraSharp", denoise=0.3), source=(1024, 1024), family="flux") == set()


def test_a_hires_cfg_above_1_on_flux_is_warned():
    assert "flux_cfg" in codes(HiresParams(cfg_scale=7), source=(1024, 1024), family="flux")
    assert "flux_cfg" not in codes(HiresParams(cfg_scale=1), source=(1024, 1024), family="flux")
    assert "flux_cfg" not in codes(HiresParams(cfg_scale=7), source=(1024, 1024), family="chroma")  # real CFG


def test_transformers_are_never_told_to_tile_but_to_aim_lower():
    big = HiresParams(scale=2, tiled="off")
    assert codes(big, source=(1536, 1536), family="flux") == {"too_large_untiled"}
    assert "too_large_untiled" not in codes(big, source=(1024, 1024), family="flux")  # 2048x2048: its presets' size


def test_an_unknown_family_is_said_and_gets_scale_presets_only():
    plan = make_plan((1024, 1024), HiresParams(), "unknown")
    assert [a.code for a in plan.advice] == ["unknown_family"]
    assert not plan.family.tileable and plan.family.name == "unknown"
    assert [p.name for p in presets_for("unknown")] == ["1.5x", "2x", "2.5x", "3x", "4x"]
    assert find_preset("flux", "Portrait 2:3").width == 1664
