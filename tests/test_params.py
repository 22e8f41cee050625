from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hires_upscale.errors import ParamsError
from hires_upscale.infotext import format_fields, parse_fields, parse_parameters
from hires_upscale.params import MAX_SEED, HiresParams, field_names, json_schema, upscaler_kind


def test_defaults_follow_the_guides_and_mean_off():
    params = HiresParams()
    assert params.enabled is False
    assert params.denoise == 0.3
    assert params.hires_steps == 0
    assert params.sharpen is False and params.sharpen_strength == 0.3
    assert params.seed == -1 and params.cfg_scale == 0
    assert params.checkpoint == params.prompt == params.negative_prompt == ""
    assert params.errors() == []


def test_every_error_names_field_value_and_what_is_allowed():
    with pytest.raises(ParamsError) as caught:
        HiresParams.from_mapping({"denoise": 1.5, "resize_mode": "double", "hires_steps": 2.5, "colour": "red"})
    errors = {e.field: e for e in caught.value.errors}
    assert set(errors) == {"denoise", "resize_mode", "hires_steps", "colour"}
    assert errors["denoise"].value == 1.5 and "from 0 to 1" in errors["denoise"].allowed
    assert "'scale', 'size', 'preset'" in errors["resize_mode"].allowed
    assert "an integer" in errors["hires_steps"].allowed
    assert "enabled" in errors["colour"].allowed
    assert "denoise: 1.5 is not allowed" in str(caught.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nan", True, [0.3], {"v": 1}])
@pytest.mark.reliability(area="Parameters", tried="NaN, inf, booleans and containers as numbers",
                         expected="ParamsError naming the field")
def test_numbers_refuse_nan_inf_bools_and_containers(bad):
    with pytest.raises(ParamsError) as caught:
        HiresParams.from_mapping({"denoise": bad})
    assert caught.value.errors[0].field == "denoise"


def test_cross_field_rules():
    with pytest.raises(ParamsError, match="width"):
        HiresParams.from_mapping({"resize_mode": "size"})
    with pytest.raises(ParamsError, match="preset"):
        HiresParams.from_mapping({"resize_mode": "preset"})
    assert HiresParams.from_mapping({"resize_mode": "size", "height": 1536}).height == 1536


def test_text_values_are_coerced_like_infotext_gives_them():
    params = HiresParams.from_mapping({"enabled": "True", "denoise": "0.35", "hires_steps": "12", "tiled": "false"})
    assert (params.enabled, params.denoise, params.hires_steps, params.tiled) == (True, 0.35, 12, "off")


def test_tiled_takes_the_booleans_of_earlier_versions():
    assert HiresParams.from_mapping({"tiled": True}).tiled == "on"
    assert HiresParams.from_mapping({"tiled": "True"}).tiled == "on"  # pasted infotext of 0.1
    assert HiresParams.from_mapping({"tiled": False}).tiled == "off"
    assert HiresParams().tiled == "auto"
    with pytest.raises(ParamsError, match="tiled: 1 is not allowed; expected one of 'auto', 'on', 'off'"):
        HiresParams.from_mapping({"tiled": 1})


def test_passes_take_auto_as_the_word_for_0_and_the_infotext_writes_it():
    params = HiresParams.from_mapping({"enabled": True, "passes": "auto"})
    assert params.passes == 0
    assert params.infotext_fields()["Hires upscale passes"] == "auto"
    assert HiresParams.from_infotext_fields({"Hires upscale passes": "auto"}).passes == 0
    assert HiresParams.from_infotext_fields({"Hires upscale passes": "0"}).passes == 0  # earlier infotexts
    assert HiresParams.from_mapping({"enabled": True, "passes": 2}).infotext_fields()["Hires upscale passes"] == "2"
    jsonschema.validate({"passes": "auto"}, json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"passes": "twice"}, json_schema())
    with pytest.raises(ParamsError, match=r"passes: 'twice' is not allowed; expected an integer from 0 to 4 "
                                          r"\(0 = auto: .*\), or 'auto'"):
        HiresParams.from_mapping({"passes": "twice"})


def test_upscaler_kinds():
    assert upscaler_kind("4x-UltraSharp") == "model"
    assert upscaler_kind("R-ESRGAN 4x+ Anime6B") == "model"
    assert upscaler_kind("Latent (nearest-exact)") == "latent"
    assert upscaler_kind("Lanczos") == "pixel"
    assert upscaler_kind("None") == "none"


params_strategy = st.builds(
    HiresParams,
    enabled=st.booleans(),
    upscaler=st.sampled_from(["4x-UltraSharp", "Latent (antialiased)", "Lanczos", "R-ESRGAN 4x+, v2: x"]),
    resize_mode=st.just("scale"),
    scale=st.floats(1, 8).map(lambda v: round(v, 2)),
    width=st.integers(0, 16384),
    height=st.integers(0, 16384),
    preset=st.sampled_from(["", "2x"]),
    fit=st.sampled_from(["crop", "fill", "stretch"]),
    denoise=st.floats(0, 1),
    hires_steps=st.integers(0, 150),
    sampler=st.sampled_from(["", "DPM++ 2M", "Euler a"]),
    scheduler=st.sampled_from(["", "Karras"]),
    tiled=st.sampled_from(["auto", "on", "off"]),
    tile_size=st.integers(0, 4096),
    sharpen=st.booleans(),
    sharpen_strength=st.floats(0, 1),
    seed=st.integers(-1, MAX_SEED),
    cfg_scale=st.floats(0, 30),
    negative_prompt=st.text(max_size=40).filter(lambda s: s.strip() == s),
    prompt=st.one_of(st.just("[prompt], sharp focus, <lora:detail:0.5>"), st.text(max_size=40).filter(
        lambda s: s.strip() == s)),
    checkpoint=st.sampled_from(["", "sd15-other.safetensors [0123abcd]", "sdxl/juggernaut, v9"]),
    modules=st.sampled_from([(), ("Built-in",), ("sdxl_vae.safetensors",),
                             ("ae, v2: [x].pt", "t5xxl_fp16.safetensors")]),
)


@given(params_strategy)
def test_infotext_round_trip_through_the_webui_line_format(params):
    assume(not params.errors())
    line = "Steps: 20, Sampler: Euler a, CFG scale: 7, " + format_fields(params.infotext_fields())
    parsed = parse_fields(line)
    assert HiresParams.from_infotext_fields(parsed) == params.used()


def test_infotext_says_only_what_the_run_used():
    # The accordion always sends its preset dropdown's value, "2x", also in resize mode "scale".
    fields = HiresParams(enabled=True, upscaler="Lanczos", preset="2x", scale=1.5, width=768,
                         sharpen_strength=0.6, fit="stretch").infotext_fields()
    assert "Hires upscale preset" not in fields and "Hires upscale width" not in fields
    assert "Hires upscale sharpen strength" not in fields and "Hires upscale fit" not in fields
    assert fields["Hires upscale scale"] == "1.5"
    in_size = HiresParams(enabled=True, resize_mode="size", width=768, scale=3).infotext_fields()
    assert in_size["Hires upscale width"] == "768" and "Hires upscale scale" not in in_size
    upscale_only = HiresParams(enabled=True, denoise=0, hires_steps=12, sampler="Euler", seed=5, tiled="on",
                               prompt="[prompt], sharp").infotext_fields()
    assert upscale_only["Hires upscale denoise"] == "0"
    assert not {"Hires upscale steps", "Hires upscale sampler", "Hires upscale seed", "Hires upscale tiled",
                "Hires upscale prompt"} & set(upscale_only)


def test_latent_upscaler_without_a_second_pass_is_refused():
    # A latent mode upscales inside the second pass: at denoise 0 nothing would be upscaled.
    with pytest.raises(ParamsError) as refused:
        HiresParams.from_mapping({"enabled": True, "upscaler": "Latent (bicubic)", "denoise": 0})
    assert [e.field for e in refused.value.errors] == ["denoise"]
    assert "Latent" in refused.value.errors[0].allowed
    HiresParams.from_mapping({"enabled": False, "upscaler": "Latent", "denoise": 0})  # off: nothing runs
    HiresParams.from_mapping({"enabled": True, "upscaler": "Lanczos", "denoise": 0})  # upscale only


def test_infotext_never_uses_the_webuis_own_hires_keys():
    # Pasting "Hires upscale" or "Hires upscaler" would switch the built-in hires fix on.
    fields = HiresParams(enabled=True, sharpen=True).infotext_fields()
    assert "Hires upscale" not in fields and "Hires upscaler" not in fields
    assert all(key.startswith("Hires upscale ") for key in fields)


def test_infotext_without_our_fields_gives_none():
    info = parse_parameters("a cat\nSteps: 20, Sampler: Euler, Hires upscale: 2, Hires upscaler: Latent")
    assert HiresParams.from_infotext_fields(info.fields) is None


@given(params_strategy)
def test_json_schema_accepts_every_valid_parameter_set(params):
    jsonschema.validate(params.as_dict(), json_schema())


def test_json_schema_is_json_and_covers_every_field_in_order():
    schema = json.loads(json.dumps(json_schema()))
    assert list(schema["properties"]) == list(field_names())
    assert schema["properties"]["denoise"]["default"] == 0.3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"denoise": 2}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unknown": 1}, schema)


def test_second_pass_overrides_keep_the_first_pass_when_empty():
    same = HiresParams()
    assert same.second_pass_prompt("a cat") == "a cat"
    assert same.second_pass_negative_prompt("blurry") == "blurry"
    assert same.second_pass_seed(1234, 3) == 1234
    assert same.second_pass_cfg_scale(7.0) == 7.0
    over = HiresParams(prompt="[prompt], sharp focus", negative_prompt="lowres", seed=42, cfg_scale=4.5)
    assert over.second_pass_prompt("a cat") == "a cat, sharp focus"
    assert over.second_pass_negative_prompt("blurry") == "lowres"
    assert over.second_pass_seed(1234, 3) == 45  # image 3 of the job: the override + 3, as the WebUI counts
    assert over.second_pass_cfg_scale(7.0) == 4.5
    assert HiresParams(prompt="   ").second_pass_prompt("a cat") == "a cat"
    assert HiresParams(seed=MAX_SEED).second_pass_seed(0, 1) == 0


def test_null_text_overrides_mean_the_same_as_empty():
    params = HiresParams.from_mapping({"negative_prompt": None, "prompt": None, "checkpoint": None, "sampler": None})
    assert params == HiresParams()
    with pytest.raises(ParamsError, match="denoise: None is not allowed"):
        HiresParams.from_mapping({"denoise": None})


def test_modules_are_a_list_of_names_from_json_the_ui_or_infotext():
    listed = HiresParams.from_mapping({"modules": ["vae.safetensors", " clip_l.safetensors ", "vae.safetensors"]})
    assert listed.modules == ("vae.safetensors", "clip_l.safetensors")  # trimmed, each once
    assert HiresParams.from_mapping({"modules": "vae.pt"}).modules == ("vae.pt",)  # a hand-written single name
    assert HiresParams.from_mapping({"modules": '["a, b.pt"]'}).modules == ("a, b.pt",)
    assert HiresParams.from_mapping({"modules": ""}).modules == ()
    assert HiresParams().as_dict()["modules"] == []
    for bad in (["Built-in", "vae.pt"], ["a", "b", "c", "d", "e"], [""], [3], 3, "[not json", {"vae": 1}):
        with pytest.raises(ParamsError, match="modules: .* not allowed; expected a list of at most 4 file names"):
            HiresParams.from_mapping({"modules": bad})
