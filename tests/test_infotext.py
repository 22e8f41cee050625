from __future__ import annotations

from conftest import PARAMETERS
from hypothesis import given
from hypothesis import strategies as st

from hires_upscale.infotext import format_fields, parse_fields, parse_parameters, quote, unquote


def test_parses_a_webui_parameters_text():
    info = parse_parameters(PARAMETERS)
    assert info.prompt == "a lighthouse at dusk, <lora:film:0.6>"
    assert info.negative_prompt == "blurry, lowres"
    assert info.steps == 20 and info.seed == 1234 and info.cfg_scale == 7.0
    assert info.sampler == "DPM++ 2M" and info.size == (96, 64)
    assert info.fields["Lora hashes"] == "film: abc123"


def test_multiline_prompts_and_no_settings_line():
    info = parse_parameters("line one\nline two\nNegative prompt: bad\nworse\nSteps: 5, Seed: 2, Size: 64x64")
    assert info.prompt == "line one\nline two" and info.negative_prompt == "bad\nworse"
    bare = parse_parameters("just a prompt, with: a colon")
    assert bare.prompt == "just a prompt, with: a colon" and bare.fields == {}
    assert bare.seed is None and bare.size is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s == s.strip() and '"' not in s[:1]))
def test_quoted_values_survive_the_line_format(value):
    line = format_fields({"Steps": "20", "Seed": "1", "Hires upscale negative": value})
    assert parse_fields(line)["Hires upscale negative"] == value
    assert unquote(quote(value)) == value


def test_with_fields_adds_to_the_settings_line_and_replaces_our_old_ones():
    from hires_upscale.infotext import with_fields

    once = with_fields(PARAMETERS, {"Hires upscale to": "192x128", "Hires upscale denoise": "0.3"})
    assert once.split("\n")[:2] == PARAMETERS.split("\n")[:2]
    assert parse_parameters(once).fields["Lora hashes"] == "film: abc123"
    twice = with_fields(once, {"Hires upscale to": "384x256"})
    fields = parse_parameters(twice).fields
    assert fields["Hires upscale to"] == "384x256" and "Hires upscale denoise" not in fields
    assert with_fields("", {"Hires upscale to": "1x1"}) == "Hires upscale to: 1x1"
