"""The second pass is the same generation: extensions carried in, every override of the built-in
Hires fix, named arguments, the batch in one pass, and controls that follow the parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness import ESRGAN_NAME, INVERTED_VAE, INVERTED_VAE_TWIN, SECOND_CHECKPOINT, decode, psnr, webui_png
from test_webui import BASE, require_api_infotext, script_args, txt2img

from hires_upscale.infotext import format_fields, parse_parameters
from hires_upscale.params import SCRIPT_FIELDS, HiresParams

RECORDER = "hires upscale test recorder"
#: Two runs of the same job agree to about 77 dB on the CPU; another VAE or checkpoint is far below.
SAME_DB = 60


def hires(webui, *, recorder: str = "", named: dict | None = None, **values):
    """txt2img 64 -> 128 with our script (positional args, or `named`) and the recorder's tag."""
    args = [named] if named is not None else script_args(**values)
    return txt2img(webui, alwayson_scripts={"hires upscale": {"args": args}, RECORDER: {"args": [recorder]}})


def pixels(result, index: int = 0) -> np.ndarray:
    return np.asarray(decode(result["images"][index]).convert("RGB"), dtype=np.float64)


def infotext(result, index: int = 0):
    return parse_parameters(json.loads(result["info"])["infotexts"][index])


def second_checkpoint_title(webui) -> str:
    titles = [m["title"] for m in webui.get("/sdapi/v1/sd-models").json()]
    return next(t for t in titles if t.startswith(SECOND_CHECKPOINT))


@pytest.fixture
def options(webui):
    """Set WebUI options for one test and put them back afterwards."""
    before = webui.get("/sdapi/v1/options").json()
    changed: list[str] = []

    def set_options(**values):
        changed.extend(values)
        assert webui.post("/sdapi/v1/options", values).status == 200

    yield set_options
    if changed:
        webui.post("/sdapi/v1/options", {k: before.get(k) for k in changed})


def test_extensions_run_in_the_second_pass_with_their_own_arguments(webui):
    webui.recorded()
    result = hires(webui, recorder="tag-7")
    assert decode(result["images"][0]).size == (128, 128)
    calls = webui.recorded()
    inner = [c for c in calls if c.get("inner")]
    hooks = {c["hook"] for c in inner}
    assert {"process", "before_process_batch", "process_batch", "postprocess_batch", "postprocess"} <= hooks, calls
    assert all(c["kind"] == "img2img" and c["size"] == [128, 128] and c["args"] == ["tag-7"] for c in inner), inner
    # the hooks that finish an image run once, in the first pass's job, on the upscaled image
    assert not hooks & {"postprocess_image", "postprocess_image_after_composite", "postprocess_maskoverlay"}
    outer = [c for c in calls if not c.get("inner") and c["hook"] == "postprocess_image"]
    assert len(outer) == 1 and outer[0]["args"] == ["tag-7"]


def test_an_extension_that_changes_the_second_pass_changes_the_result(webui):
    plain = hires(webui, recorder="")
    shaped = hires(webui, recorder="cfg=1.5")  # the recorder sets the CFG of img2img jobs only
    assert psnr(pixels(plain), pixels(shaped)) < 40


def test_an_extension_kept_out_by_the_setting_does_not_run_there(webui, options):
    options(hires_upscale_scripts_kept_out="ADetailer, Hires upscale test recorder")
    webui.recorded()
    hires(webui, recorder="tag-8")
    calls = webui.recorded()
    assert [c for c in calls if c.get("inner")] == []
    assert any(c["hook"] == "process" and c["kind"] == "txt2img" for c in calls)


@pytest.mark.parametrize("override", [
    {"prompt": "[prompt], a red sky"},
    {"negative_prompt": "a blue sea"},
    {"cfg_scale": 2.5},
    {"seed": 99},
])
def test_each_override_changes_the_second_pass_and_is_in_the_infotext(webui, override):
    same = hires(webui)
    changed = hires(webui, **override)
    assert psnr(pixels(same), pixels(changed)) < 40
    info = infotext(changed)
    params = HiresParams.from_infotext_fields(info.fields)
    name, value = next(iter(override.items()))
    assert getattr(params, name) == value
    assert info.prompt == BASE["prompt"] and info.seed == BASE["seed"]  # the first pass's, as it ran
    # the built-in Hires fix's own keys are never written (pasting them would switch it on)
    assert not {"Hires prompt", "Hires negative prompt", "Hires CFG Scale", "Hires checkpoint"} & set(info.fields)


def test_the_prompt_override_is_the_second_pass_prompt(webui):
    """`[prompt]` appends: the same text as the first pass gives the same image as no override."""
    same = hires(webui)
    spelled = hires(webui, prompt="[prompt]")
    assert pixels(same).tobytes() == pixels(spelled).tobytes()


def test_a_hires_vae_decodes_the_second_pass_only_is_in_the_infotext_and_the_first_passs_is_back(webui):
    if webui.kind == "reforge":
        refused = infotext(hires(webui, modules=(INVERTED_VAE,))).fields["Hires upscale error"]
        assert "keeps a VAE once loaded" in refused, refused
        pytest.skip("reForge (older Forge loader) kept another VAE after sd_vae went back: the choice is refused")
    options = webui.get("/hires-upscale/v1/options").json()
    assert INVERTED_VAE in options["modules"], options["modules"]
    assert options["max_modules"] == (4 if webui.kind == "forge" else 1)
    plain = pixels(txt2img(webui))
    # no color fix: it would take the coarse colours back from the upscaled first pass
    before = hires(webui, color_fix="none")
    webui.recorded()
    inverted = hires(webui, color_fix="none", modules=(INVERTED_VAE,))
    assert decode(inverted["images"][0]).size == (128, 128)
    assert psnr(pixels(before), pixels(inverted)) < 15  # a negated decoder: other colours everywhere
    assert HiresParams.from_infotext_fields(infotext(inverted).fields).modules == (INVERTED_VAE,)
    # the checkpoint's own VAE is what the first pass used here: the same as no choice (the same job
    # twice differs in the last bits on the CPU: about 77 dB)
    assert psnr(pixels(hires(webui, color_fix="none", modules=("Built-in",))), pixels(before)) > SAME_DB
    # the first pass's VAE is back for the next job, with our script and without
    assert psnr(pixels(hires(webui, color_fix="none")), pixels(before)) > SAME_DB
    assert psnr(pixels(txt2img(webui)), plain) > SAME_DB
    assert webui.get("/sdapi/v1/options").json().get("sd_vae") in (None, "Automatic")



def test_an_existing_image_gets_the_hires_vae_or_its_own_and_a_missing_one_is_said(webui):
    made = txt2img(webui)

    def upscale(extra_text: str = "", **params) -> dict:
        reply = webui.post("/hires-upscale/v1/upscale", {"images": [webui_png(made, extra_text)], "params": {
            "upscaler": "Lanczos", "denoise": 0.3, "hires_steps": 2, "color_fix": "none", **params}})
        assert reply.status == 200, (reply.body, webui.log_tail())
        return reply.json()["images"][0]

    def picture(done: dict) -> np.ndarray:
        return np.asarray(decode(done["image"]).convert("RGB"), dtype=np.float64)

    plain = upscale()
    if webui.kind == "reforge":
        said = [w["message"] for w in upscale(f", VAE: {INVERTED_VAE}")["warnings"]
                if w["code"] == "image_modules_unsupported"]
        assert said and INVERTED_VAE in said[0], said
        pytest.skip("reForge (older Forge loader) kept another VAE after sd_vae went back: an image's own is "
                    "said not to be used")
    assert psnr(picture(plain), picture(upscale(modules=[INVERTED_VAE]))) < 15
    assert psnr(picture(plain), picture(upscale())) > SAME_DB
    # the image's own VAE, as A1111 names it in PNG info (Forge reads that too) and as Forge does
    own = [f", VAE: {INVERTED_VAE}"] + ([", Module 1: " + INVERTED_VAE.removesuffix(".safetensors")]
                                         if webui.kind == "forge" else [])
    for extra in own:
        assert psnr(picture(plain), picture(upscale(extra))) < 15, extra
        assert psnr(picture(upscale(extra, modules=["Built-in"])), picture(plain)) > SAME_DB
    missing = upscale(", VAE: gone-vae.safetensors")
    assert psnr(picture(missing), picture(plain)) > SAME_DB
    said = [w for w in missing["warnings"] if w["code"] == "image_modules_missing"]
    assert said and "gone-vae.safetensors" in said[0]["message"], missing["warnings"]
    assert "gone-vae.safetensors is not here" in parse_parameters(missing["infotext"]).fields["Hires upscale notes"]
    # as is a checkpoint that is not here (the last "Model" of the text counts)
    no_model = upscale(", Model: gone-checkpoint")
    said = [w["message"] for w in no_model["warnings"] if w["code"] == "image_checkpoint_missing"]
    assert said and "gone-checkpoint is not here" in said[0], no_model["warnings"]
    assert psnr(picture(no_model), picture(plain)) > SAME_DB  # the loaded one is the image's here


def test_a_hires_vae_the_webui_lacks_or_too_many_are_refused_naming_what_is_there(webui):
    if webui.kind == "reforge":
        pytest.skip("reForge refuses every hires VAE (see the test above)")
    result = hires(webui, modules=("nope.safetensors",))
    error = infotext(result).fields["Hires upscale error"]
    assert "modules" in error and INVERTED_VAE in error and decode(result["images"][0]).size == (64, 64)
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [webui_png(txt2img(webui))], "params": {
        "upscaler": "Lanczos", "denoise": 0.3, "modules": ["nope.safetensors"]}})
    assert reply.status == 422, reply.body
    assert reply.json()["detail"][0]["loc"] == ["body", "params", "modules"], reply.body
    if webui.kind != "forge":  # A1111 takes one VAE; Forge a VAE and text encoders
        two = hires(webui, modules=(INVERTED_VAE, INVERTED_VAE_TWIN))
        assert "one file name" in infotext(two).fields["Hires upscale error"]
        assert decode(two["images"][0]).size == (64, 64)


def test_a_hires_checkpoint_changes_the_result_loads_once_per_batch_and_goes_back(webui):
    second = second_checkpoint_title(webui)
    before = hires(webui)
    webui.recorded()
    body = {**BASE, "batch_size": 2, "n_iter": 2,
            "alwayson_scripts": {"hires upscale": {"args": script_args(checkpoint=second)}, RECORDER: {"args": [""]}}}
    reply = webui.post("/sdapi/v1/txt2img", body)
    assert reply.status == 200, (reply.body, webui.log_tail())
    result = reply.json()
    loads = [c["checkpoint"] for c in webui.recorded() if c["hook"] == "model_loaded"]
    assert len(result["images"]) == 4
    assert 0 < len(loads) <= 4, loads  # at most 2 per batch: the hires checkpoint and back
    assert not loads[-1].startswith(SECOND_CHECKPOINT)
    assert psnr(pixels(before), pixels(result)) < 40
    assert HiresParams.from_infotext_fields(infotext(result).fields).checkpoint == second
    # the first pass's checkpoint is loaded again: the same job without the override is as before
    assert pixels(hires(webui)).tobytes() == pixels(before).tobytes()


def test_pasted_overrides_come_back_in_the_result(webui):
    require_api_infotext(webui)
    overrides = HiresParams(enabled=True, upscaler=ESRGAN_NAME, hires_steps=2,
                            checkpoint=second_checkpoint_title(webui), prompt="[prompt], a red sky: at dusk",
                            negative_prompt="lowres, [prompt]", cfg_scale=3.5, seed=77)
    fields = overrides.infotext_fields()
    text = "a lighthouse\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, " + format_fields(fields)
    result = txt2img(webui, infotext=text)
    assert decode(result["images"][0]).size == (128, 128)
    pasted = HiresParams.from_infotext_fields(infotext(result).fields)
    for name in ("checkpoint", "prompt", "negative_prompt", "cfg_scale", "seed"):
        assert getattr(pasted, name) == getattr(overrides, name), name


def test_a_hires_checkpoint_the_webui_lacks_is_refused_by_name(webui):
    result = hires(webui, checkpoint="no-such-model.safetensors")
    assert decode(result["images"][0]).size == (64, 64)
    text = json.loads(result["info"])["infotexts"][0]
    assert "checkpoint: 'no-such-model.safetensors' is not allowed" in text


def test_named_arguments(webui):
    result = hires(webui, named={"upscaler": ESRGAN_NAME, "hires_steps": 2, "scale": 1.5})
    assert decode(result["images"][0]).size == (128, 128)  # 96 snapped to 128
    params = HiresParams.from_infotext_fields(infotext(result).fields)
    assert (params.upscaler, params.scale, params.hires_steps) == (ESRGAN_NAME, 1.5, 2)
    off = hires(webui, named={"enabled": False})
    assert decode(off["images"][0]).size == (64, 64)
    bad = hires(webui, named={"denoise": 3, "colour": "red"})
    text = json.loads(bad["info"])["infotexts"][0]
    assert decode(bad["images"][0]).size == (64, 64)
    assert "denoise: 3 is not allowed" in text and "colour" in text


def test_a_batch_through_one_second_pass_matches_one_image_at_a_time(webui):
    webui.recorded()
    batch = txt2img(webui, batch_size=2, alwayson_scripts={"hires upscale": {"args": script_args()},
                                                          RECORDER: {"args": [""]}})
    inner_batches = [c for c in webui.recorded() if c.get("inner") and c["hook"] == "process"]
    assert len(inner_batches) == 1  # one second pass for the whole batch
    for index, seed in enumerate((BASE["seed"], BASE["seed"] + 1)):
        alone = txt2img(webui, seed=seed, alwayson_scripts={"hires upscale": {"args": script_args()}})
        assert infotext(batch, index).seed == seed
        # The same seed, prompt and sizes; a batch of 2 may differ from a batch of 1 in the last bits of
        # its matrix products, as the WebUI's own batches do (its first pass: about 82 dB here).
        assert psnr(pixels(batch, index), pixels(alone)) > 45, index


def test_every_control_follows_the_parameters(webui):
    config = webui.get("/config").json()
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c.get("props")}
    fields = {f.name: f for f in __import__("dataclasses").fields(HiresParams)}
    for tab in ("txt2img", "img2img"):
        for name in SCRIPT_FIELDS:
            if name == "enabled":
                continue  # the accordion itself
            control = props.get(f"hires_upscale_{tab}_{name}")
            assert control is not None, (tab, name)
            meta = fields[name].metadata
            assert control["label"] == meta["label"], (tab, name)
            if meta["minimum"] is not None:
                assert (control.get("minimum"), control.get("maximum")) == (meta["minimum"], meta["maximum"]), name
            if meta["step"] is not None and "step" in control:
                assert control["step"] == meta["step"], name
            if meta["choices"]:
                assert [c[0] if isinstance(c, list) else c for c in control["choices"]] == list(meta["choices"])


FREEU = "FreeU Integrated (SD 1.x, SD 2.x, SDXL)"


def test_forges_freeu_shapes_the_second_pass_too(webui, options):
    titles = {t.lower() for t in webui.get("/sdapi/v1/scripts").json().get("txt2img", [])}
    if FREEU.lower() not in titles:
        pytest.skip(f"{FREEU!r} is one of Forge's own scripts; this WebUI ({webui.version}) has none")
    freeu = {FREEU: {"args": [True, 1.5, 1.6, 0.9, 0.2, 0.0, 1.0]}}
    body = {**BASE, "alwayson_scripts": {"hires upscale": {"args": script_args()}, **freeu}}
    carried_in = webui.post("/sdapi/v1/txt2img", body)
    options(hires_upscale_scripts_kept_out="sd_forge_freeu")  # its folder: its title has commas
    kept_out = webui.post("/sdapi/v1/txt2img", body)
    assert carried_in.status == kept_out.status == 200
    # the same first pass (FreeU on in both), a second pass with and without it
    assert psnr(pixels(carried_in.json()), pixels(kept_out.json())) < 40
