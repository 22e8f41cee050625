"""Which of the first pass's extensions the second pass carries (the matching rules; the real
WebUI runs them in tests/webui/test_second_pass.py)."""

from __future__ import annotations

from pathlib import Path

from hires_upscale.webui import carried

ROOT = Path(__file__).resolve().parents[1]


class Script:
    def __init__(self, title: str, filename: str) -> None:
        self._title, self.filename = title, filename

    def title(self) -> str:
        return self._title


class Runner:
    def __init__(self, *scripts: Script) -> None:
        self.alwayson_scripts = list(scripts)


ADETAILER = Script("ADetailer", "/webui/extensions/adetailer/scripts/!adetailer.py")
DYNAMIC = Script("Dynamic Prompts v2.17.1", "/webui/extensions/sd-dynamic-prompts/scripts/dynamic_prompting.py")
CONTROLNET = Script("ControlNet", "/webui/extensions/sd-webui-controlnet/scripts/controlnet.py")
FREEU = Script("FreeU Integrated", "/forge/extensions-builtin/sd_forge_freeu/scripts/forge_freeu.py")
OURS = Script("Hires upscale", str(ROOT / "scripts" / "hires_upscale.py"))


def test_the_default_keeps_out_what_makes_or_finishes_images_and_ourselves():
    outer = Runner(OURS, ADETAILER, CONTROLNET, DYNAMIC, FREEU)
    assert carried.carried_scripts(outer, carried.DEFAULT_KEPT_OUT) == [CONTROLNET, FREEU]


def test_names_match_a_title_a_versioned_title_a_file_or_a_folder_in_any_case():
    for setting in ("controlnet", "CONTROLNET", "sd-webui-controlnet", " ControlNet "):
        assert carried.is_kept_out(CONTROLNET, carried.kept_out_names(setting)), setting
    assert carried.is_kept_out(DYNAMIC, carried.kept_out_names("dynamic prompts"))
    assert not carried.is_kept_out(DYNAMIC, carried.kept_out_names("dynamic"))  # a whole word, not a prefix
    assert not carried.is_kept_out(FREEU, carried.kept_out_names(" , ,"))


def test_an_empty_setting_carries_everything_but_ourselves():
    assert carried.carried_scripts(Runner(OURS, ADETAILER), "") == [ADETAILER]
    assert carried.carried_scripts(None, "") == []


def test_a_script_whose_title_breaks_is_still_matched_by_its_folder():
    class Broken(Script):
        def title(self) -> str:
            raise RuntimeError("no title")

    broken = Broken("", "/webui/extensions/some-ext/scripts/thing.py")
    assert carried.is_kept_out(broken, ["some-ext"])
