"""Model families from the host's own model classes, and Forge's distilled CFG in our second pass (#24).

A Flux checkpoint cannot run here (Forge main sizes every Flux file at 12 B parameters; see README,
"Model families"), so the Flux-specific wiring is tested against the hosts' real code: their engine
classes, asked through the recorder extension's route, and their own processing and infotext with the
loaded engine saying it reads the distilled CFG as Forge's Flux dev engine does (the recorder's
"reads=distilled" tag).
"""

from __future__ import annotations

import json

import pytest
from harness import ESRGAN_NAME
from test_webui import txt2img

from hires_upscale.infotext import parse_parameters
from hires_upscale.resolution import FAMILIES, PRESETS

pytestmark = pytest.mark.smoke

RECORDER = "hires upscale test recorder"
DISTILLED_KEY = "Hires upscale distilled cfg"


def hires(webui, recorder: str = "", distilled_cfg_scale: float | None = None, **values) -> dict:
    params = {"enabled": True, "upscaler": ESRGAN_NAME, "scale": 2, "denoise": 0.3, "hires_steps": 2, **values}
    extra = {} if distilled_cfg_scale is None else {"distilled_cfg_scale": distilled_cfg_scale}
    return txt2img(webui, **extra, alwayson_scripts={"hires upscale": {"args": [params]},
                                                      RECORDER: {"args": [recorder]}})


def info(result: dict) -> dict[str, str]:
    return parse_parameters(json.loads(result["info"])["infotexts"][0]).fields


def second_pass_entries(webui) -> list[dict]:
    return [r for r in webui.recorded() if r["hook"] == "process" and r.get("inner")]


def test_the_family_is_the_hosts_and_every_family_has_presets(webui):
    hires(webui)  # a model is loaded
    options = webui.get("/hires-upscale/v1/options").json()
    assert options["host"] == webui.kind
    assert options["model_family"] == "sd15"
    for name in FAMILIES:
        assert options["presets"][name] == [p.as_dict() for p in PRESETS[name]]
        assert options["families"][name]["tileable"] == (FAMILIES[name].architecture == "unet")
    assert [p["name"] for p in options["presets"]["unknown"]] == ["1.5x", "2x", "2.5x", "3x", "4x"]


def test_every_engine_of_the_host_has_a_family_and_the_transformers_say_why_they_run_untiled(webui):
    """Forge's and Forge Neo's engine classes (backend.diffusion_engine.*), asked of our host object
    in the WebUI itself: none is unknown, none is taken for SD1.5, and the DiTs refuse tiling saying why."""
    if webui.kind == "a1111":
        pytest.skip("A1111 names its models by flags on one class (is_sdxl, is_sd3...): no engine classes")
    reply = webui.get("/hires-upscale-test/engines").json()
    assert reply["host"] == webui.kind
    engines = reply["engines"]
    expected = {"StableDiffusion": "sd15", "StableDiffusionXL": "sdxl", "Flux": "flux", "Chroma": "chroma"}
    if webui.kind == "forge":
        expected |= {"StableDiffusion2": "sd2", "StableDiffusion3": "sd3"}
    else:  # Forge Neo: no SD2 / SD3, and its own families
        expected |= {"Flux2": "flux2", "QwenImage": "qwen", "Lumina2": "lumina2", "ZImage": "zimage", "Wan": "wan",
                     "Anima": "anima"}
    assert {name: engines[name]["family"] for name in expected} == expected
    assert all(answer["family"] != "unknown" for answer in engines.values()), engines
    for name, answer in engines.items():
        if answer["family"] in ("sd15", "sd2", "sdxl"):
            assert answer["cannot_tile"] is None, (name, answer)
        else:
            assert answer["cannot_tile"].startswith(f"tiled mode is not available for {answer['family']} on this "
                                                    "host"), (name, answer)
    assert engines["Flux"]["guidance"] == "distilled CFG"
    assert engines["StableDiffusion"]["guidance"] is None


def test_the_distilled_cfg_is_carried_or_overridden_and_written_for_both_passes(webui):
    if not webui.kind.startswith("forge"):
        pytest.skip("the distilled CFG is Forge's field; on A1111 see the next test")
    webui.recorded()
    carried = hires(webui, recorder="reads=distilled", distilled_cfg_scale=2.5)
    [inner] = second_pass_entries(webui)
    assert inner["distilled_cfg"] == 2.5
    fields = info(carried)
    assert (fields["Distilled CFG Scale"], fields[DISTILLED_KEY]) == ("2.5", "2.5")  # Forge's own, then ours
    assert fields["Hires upscale to"] == "128x128"

    overridden = hires(webui, recorder="reads=distilled", distilled_cfg_scale=2.5, distilled_cfg=4)
    [inner] = second_pass_entries(webui)
    assert inner["distilled_cfg"] == 4.0
    fields = info(overridden)
    assert (fields["Distilled CFG Scale"], fields[DISTILLED_KEY]) == ("2.5", "4")

    if webui.kind == "forge-neo":  # its shift models read the same field as their sampling shift
        shifted = hires(webui, recorder="reads=shift", distilled_cfg_scale=6.5, distilled_cfg=3)
        [inner] = second_pass_entries(webui)
        assert inner["distilled_cfg"] == 3.0
        fields = info(shifted)
        assert (fields["Shift"], fields[DISTILLED_KEY]) == ("6.5", "3")


def test_a_distilled_cfg_the_model_does_not_read_is_said_and_not_written(webui):
    webui.recorded()
    result = hires(webui, distilled_cfg=4)  # SD1.5 reads none
    fields = info(result)
    assert DISTILLED_KEY not in fields and "Distilled CFG Scale" not in fields
    assert "Hires distilled CFG 4 was not used" in fields["Hires upscale notes"]
    assert fields["Hires upscale to"] == "128x128"
