"""Results that never claim what did not happen, and a nested pass that leaves the outer job as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness import BROKEN_HOST_UPSCALER, decode, webui_png
from PIL import Image
from test_second_pass import RECORDER, infotext, pixels
from test_webui import BASE, script_args, txt2img, txt2img_watching_progress

from benchmarks.colorfix import coarse_psnr, fine_correlation
from hires_upscale.infotext import parse_parameters
from hires_upscale.params import SCRIPT_FIELDS


def with_upscaler(name: str, **values) -> list:
    args = script_args(**values)
    args[SCRIPT_FIELDS.index("upscaler")] = name
    return args


def hires(webui, upscaler: str, **values):
    return txt2img(webui, alwayson_scripts={"hires upscale": {"args": with_upscaler(upscaler, **values)}})


def test_a_latent_upscaler_at_denoise_0_is_refused_not_passed_off_as_upscaled(webui):
    result = hires(webui, "Latent", denoise=0)
    assert decode(result["images"][0]).size == (64, 64)
    fields = infotext(result).fields
    assert "Hires upscale to" not in fields
    assert "denoise" in fields["Hires upscale error"] and "Latent" in fields["Hires upscale error"]
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [webui_png(txt2img(webui))],
                                                    "params": {"upscaler": "Latent", "denoise": 0}})
    assert reply.status == 422 and reply.body["detail"][0]["loc"] == ["body", "params", "denoise"], reply.body


def test_a_webui_upscaler_that_fails_is_said_not_replaced_by_lanczos(webui):
    upscalers = webui.get("/hires-upscale/v1/options").json()["upscalers"]
    assert BROKEN_HOST_UPSCALER in upscalers, upscalers
    result = hires(webui, BROKEN_HOST_UPSCALER)
    assert decode(result["images"][0]).size == (64, 64)  # the first pass's image, kept
    fields = infotext(result).fields
    assert f"the upscaler {BROKEN_HOST_UPSCALER} failed" in fields["Hires upscale error"]
    assert "Hires upscale to" not in fields
    reply = webui.post("/hires-upscale/v1/upscale", {"images": [webui_png(txt2img(webui))],
                                                    "params": {"upscaler": BROKEN_HOST_UPSCALER, "denoise": 0}})
    assert reply.status == 424, reply.body
    assert reply.body["detail"][0]["loc"] == ["body", "params", "upscaler"]
    assert reply.body["detail"][0]["type"] == "upscaler_failed"


def test_the_plans_advice_reaches_txt2img_users_once_per_job(webui):
    result = hires(webui, "Latent", denoise=0.35)
    info = json.loads(result["info"])
    advice = info["extra_generation_params"]["Hires upscale advice"]  # the API's info, once
    assert "Latent upscalers need denoise of at least 0.5" in advice
    assert all(text.count("Latent upscalers need denoise") == 1 for text in info["infotexts"])
    assert decode(result["images"][0]).size == (128, 128)  # advice, not a refusal


def test_each_latent_mode_runs_its_own_interpolation(webui):
    # img2img's own latent resize is bilinear whatever the mode: then all three would be one image
    modes = ("Latent (nearest)", "Latent (bicubic)", "Latent")
    runs = {mode: pixels(hires(webui, mode, denoise=0.5)) for mode in modes}
    again = pixels(hires(webui, "Latent (nearest)", denoise=0.5))
    assert np.array_equal(again, runs["Latent (nearest)"])  # the same mode twice: the same image
    names = list(runs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not np.array_equal(runs[first], runs[second]), (first, second)


def test_the_nested_pass_leaves_params_txt_and_settings_as_the_outer_job_made_them(webui):
    before = webui.get("/sdapi/v1/options").json()
    hires(webui, "Lanczos", hires_steps=2)
    written = (webui.data_dir / "params.txt").read_text(encoding="utf-8")
    # the user's generation as the WebUI writes it before sampling: the first pass, our fields included
    assert written.startswith(BASE["prompt"])
    assert "Size: 64x64" in written and "Size: 128x128" not in written
    assert "Hires upscale upscaler: Lanczos" in written
    after = webui.get("/sdapi/v1/options").json()
    assert {k: after.get(k) for k in before if after.get(k) != before[k]} == {}


def test_token_merging_stays_on_for_the_rest_of_the_outer_job(webui):
    if webui.kind == "forge":
        pytest.skip("Forge patches token merging into a copy of the model per sampling: nothing can leak")
    webui.recorded()
    try:
        result = txt2img(webui, n_iter=2, override_settings={"token_merging_ratio": 0.5},
                         alwayson_scripts={"hires upscale": {"args": with_upscaler("Lanczos")},
                                           RECORDER: {"args": [""]}})
    finally:
        # A1111 v1.10 and Forge never restore an override of a setting that was never saved
        # (their stored_opts skip it), so the host itself would leave token merging on for the session.
        webui.post("/sdapi/v1/options", {"token_merging_ratio": 0})
    assert [decode(data).size for data in result["images"]] == [(128, 128)] * 2
    outer = [c["tome"] for c in webui.recorded() if c["hook"] == "process_batch" and not c["inner"]]
    assert outer == [0.5, 0.5]  # the second batch as the first, after our pass


@pytest.mark.parametrize("mode", ["scale", "size"])
def test_the_infotext_names_only_what_the_run_used(webui, mode):
    values = {"resize_mode": mode, "scale": 1.5, "width": 128, "height": 128, "preset": "2x", "sharpen_strength": 0.6}
    fields = infotext(hires(webui, "Lanczos", **values)).fields
    assert "Hires upscale preset" not in fields and "Hires upscale sharpen strength" not in fields
    assert ("Hires upscale scale" in fields) == (mode == "scale")
    assert ("Hires upscale width" in fields) == (mode == "size")


@pytest.mark.parametrize("mode", ["wavelet", "adain"])
def test_the_color_fix_runs_in_the_webui_and_is_in_the_infotext(webui, mode):
    made = txt2img(webui)
    went_in = decode(made["images"][0]).resize((128, 128), Image.Resampling.LANCZOS)  # what Lanczos gives the pass

    def upscale(color_fix: str):
        reply = webui.post("/hires-upscale/v1/upscale", {"images": [webui_png(made)], "params": {
            "upscaler": "Lanczos", "denoise": 0.5, "hires_steps": 2, "color_fix": color_fix}})
        assert reply.status == 200, reply.body
        done = reply.body["images"][0]
        return decode(done["image"]).convert("RGB"), parse_parameters(done["infotext"]).fields

    plain, plain_fields = upscale("none")
    fixed, fields = upscale(mode)
    assert fields["Hires upscale color fix"] == mode and plain_fields["Hires upscale color fix"] == "none"
    assert coarse_psnr(fixed, went_in) > coarse_psnr(plain, went_in)
    assert fine_correlation(fixed, plain) > 0.9  # the pass's detail is kept


def test_a_4x_target_runs_in_two_passes_of_2x(webui):
    webui.recorded()
    result = txt2img(webui, alwayson_scripts={"hires upscale": {"args": with_upscaler("Lanczos", scale=4, passes=0,
                                                                                      hires_steps=1)},
                                              RECORDER: {"args": [""]}})
    assert decode(result["images"][0]).size == (256, 256)
    fields = infotext(result).fields
    assert fields["Hires upscale passes"] == "auto" and fields["Hires upscale to"] == "256x256"
    assert "Hires upscale advice" not in fields  # 2x per pass: no "more than 2x in one pass" warning
    passes = [c["size"] for c in webui.recorded() if c.get("inner") and c["hook"] == "process"]
    assert passes == [[128, 128], [256, 256]]


def test_progress_names_each_pass_and_an_interrupt_in_pass_2_keeps_pass_1(webui):
    """64 -> 256 in `passes: 2`: the progress text says which pass runs, and the interrupt pressed at pass
    2's first sampling step gives back pass 1's whole result (upscaled, second pass, color fix), said so."""
    webui.inject({"kind": "interrupt", "stage": "sampling", "min_pixels": 256 * 256})  # pass 2 only
    body = {**BASE, "alwayson_scripts": {"hires upscale": {"args": with_upscaler("Lanczos", scale=4, passes=2,
                                                                                 hires_steps=6)}}}
    reply, seen = txt2img_watching_progress(webui, body)
    assert webui.faults_left() == []
    assert any(t.startswith("Hires upscale: pass 1/2: second pass, 6 steps at 128x128") for t in seen), seen
    assert any(t.startswith("Hires upscale: pass 2/2: second pass, 6 steps at 256x256") for t in seen), seen
    result = reply.json()
    assert decode(result["images"][0]).size == (128, 128)
    fields = infotext(result).fields
    assert fields["Hires upscale interrupted"] == "after pass 1/2" and fields["Hires upscale to"] == "128x128"
    assert fields["Hires upscale passes"] == "2"
