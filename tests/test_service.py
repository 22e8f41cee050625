"""The adapter's use cases (service) and its second pass (backend) on a stand-in WebUI and a
`FakeHost`: one job planned once, each image's outcome, the out-of-memory ladder as it runs.
Wiring only; tests/webui runs the same on the real hosts."""

from __future__ import annotations

import types

import pytest
import standin_webui
from conftest import PARAMETERS  # at import: later, "conftest" may be tests/webui's
from standin_webui import FakeHost, noise

OOM = RuntimeError("CUDA out of memory. Tried to allocate 9.50 GiB")


@pytest.fixture
def webui(monkeypatch, tmp_path):
    yield standin_webui.install(monkeypatch, tmp_path)
    standin_webui.forget_adapter()


@pytest.fixture
def adapter(webui):
    import hires_upscale.webui.backend as backend
    import hires_upscale.webui.service as service

    return types.SimpleNamespace(service=service, backend=backend, job=__import__("hires_upscale.webui.job").webui.job)


class Processing:
    """A txt2img job of the WebUI as the script's hooks see it."""

    def __init__(self, count: int = 2, size: tuple[int, int] = (64, 64), steps: int = 20) -> None:
        self.width, self.height = size
        self.steps, self.batch_size, self.iteration = steps, count, 0
        self.all_prompts = [f"prompt {i}" for i in range(count)]
        self.all_negative_prompts = ["blurry"] * count
        self.all_seeds = [100 + i for i in range(count)]
        self.all_subseeds = [7] * count
        self.subseed_strength, self.sampler_name, self.cfg_scale = 0.0, "Euler", 7.0
        self.outpath_samples, self.scripts, self.script_args = "", None, []
        self.extra_generation_params: dict = {}
        self.comments: list[str] = []

    def comment(self, text: str) -> None:
        self.comments.append(text)


def session(adapter, **host):
    return adapter.backend.Session(FakeHost(**host))


def args(**values):
    return [{"upscaler": "Lanczos", "hires_steps": 3, **values}]


def batch(adapter, p, session_, count):
    import torch

    tensors = [torch.rand(3, p.height, p.width) for _ in range(count)]
    adapter.service.postprocess_batch(p, tensors, session_)
    return tensors


def test_the_plan_advised_in_process_is_the_plan_that_runs(adapter, webui):
    p, on = Processing(), session(adapter)
    adapter.service.prepare(p, args(scale=4, denoise=0.6), on)  # 4x in one pass: advice
    job = adapter.job.job_of(p)
    assert job is not None and job.plan.target == (256, 256)
    assert [c.removeprefix("Hires upscale: ") for c in p.comments] == [a.message for a in job.plan.advice] != []
    batch(adapter, p, on, 2)
    [second] = webui.passes
    assert (second.width, second.height, second.steps, second.batch_size) == (256, 256, 3, 2)
    assert second.seed == [100, 101] and second.prompt == ["prompt 0", "prompt 1"]
    assert second._hires_upscale_inner and second._ad_inner  # never upscaled again, by us or ADetailer
    assert on.host.loaded_back == [webui.shared.sd_model.sd_checkpoint_info]  # the first pass's model is back
    assert all(type(outcome).__name__ == "Result" for outcome in job.outcomes.values())


def test_an_inner_pass_and_bad_arguments_are_never_upscaled(adapter, webui):
    inner, on = Processing(), session(adapter)
    inner._ad_inner = True
    adapter.service.prepare(inner, args(), on)
    assert adapter.job.job_of(inner) is None
    bad = Processing()
    adapter.service.prepare(bad, [{"upscaler": "Lanczos", "scale": "twice"}], on)
    assert adapter.job.job_of(bad) is None
    assert "scale: 'twice' is not allowed" in bad.extra_generation_params["Hires upscale error"]
    assert webui.passes == []


def test_a_failed_pass_keeps_the_images_and_says_why_in_each_infotext(adapter, webui):
    p, on = Processing(), session(adapter)
    adapter.service.prepare(p, args(), on)
    webui.failing[2] = ValueError("an extension broke the pass")
    tensors = batch(adapter, p, on, 2)
    before = [t.clone() for t in tensors]
    job = adapter.job.job_of(p)
    assert [type(o).__name__ for o in job.outcomes.values()] == ["Failure", "Failure"]
    assert all(t.shape == b.shape for t, b in zip(tensors, before, strict=True))  # still the first pass's size
    for index in range(2):
        p.batch_index = index
        adapter.service.postprocess(p, noise(64, 64), on)
        assert "ValueError: an extension broke the pass" in p.extra_generation_params["Hires upscale error"]
        assert "Hires upscale to" not in p.extra_generation_params


def test_a_batch_that_runs_out_of_memory_runs_one_at_a_time_then_tiled(adapter, webui, monkeypatch):
    p, on = Processing(), session(adapter)
    # a GPU with room for the batch: it is tried together first
    monkeypatch.setattr(adapter.backend, "_memory", lambda: adapter.backend.MemoryFacts(10**12))
    adapter.service.prepare(p, args(), on)
    webui.failing[2] = OOM
    calls = iter([OOM, None, None])

    def first_single_fails(img2img):  # image 0 alone runs out of memory untiled, then every image fits tiled
        webui.passes.append(img2img)
        img2img.init()
        error = next(calls) if img2img.batch_size == 1 else OOM
        if error is not None:
            raise error
        return types.SimpleNamespace(images=[i.resize((img2img.width, img2img.height)) for i in img2img.init_images],
                                     extra_generation_params={})

    monkeypatch.setattr(webui.modules["modules.processing"], "process_images", first_single_fails)
    batch(adapter, p, on, 2)
    assert [(x.batch_size, bool(x.seed == 100 or x.seed == 101)) for x in webui.passes] == [
        (2, False), (1, True), (1, True), (1, True)]
    assert on.host.tiled == [(128, 128), (128, 128)]  # image 0 again and image 1: tiled from then on
    assert on.tiling.out_of_memory_from == 128 * 128  # remembered for the session
    notes = [n.code for n in adapter.job.job_of(p).outcomes[0].notices]
    assert notes == ["batch_after_oom", "tiled_after_oom"]


def test_a_host_that_cannot_tile_says_so_when_tiling_is_asked_for(adapter, webui):
    p, on = Processing(count=1), session(adapter, untileable="its UNet is a DiT")
    adapter.service.prepare(p, args(tiled="on"), on)
    batch(adapter, p, on, 1)
    assert on.host.tiled == [] and len(webui.passes) == 1
    [notice] = adapter.job.job_of(p).outcomes[0].notices
    assert notice.code == "tiling_unavailable" and "its UNet is a DiT" in notice.message


def test_the_api_host_reports_which_webui_it_is(adapter):
    host = adapter.service.WebUIApiHost(session(adapter, kind="forge", max_modules=4,
                                                files={"ae.safetensors": "/m/ae.safetensors"}))
    options = host.options()
    assert (options["host"], options["max_modules"], options["modules"]) == ("forge", 4, ["ae.safetensors"])


# -- any picture a user brings: where the second pass's prompt and settings come from --------------

def existing(text: dict[str, str] | None = None, fmt: str = "PNG"):
    """A 64x64 picture as the tab and the API open one, with these PNG texts."""
    import base64
    import io

    from PIL import PngImagePlugin

    from hires_upscale.images import decode_base64_image

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    noise(64, 64).save(buffer, fmt, **({"pnginfo": info} if fmt == "PNG" else {}))
    return decode_base64_image(base64.b64encode(buffer.getvalue()).decode())


def upscaled(adapter, image, **params):
    from hires_upscale.params import HiresParams

    values = {"enabled": True, "upscaler": "Lanczos", "hires_steps": 0, **params}
    return adapter.service.upscale_existing(image, HiresParams.from_mapping(values), session(adapter))


def codes(done) -> list[str]:
    return [notice.code for notice in done.result.notices]


def test_a_photo_runs_with_the_webuis_defaults_each_named_and_no_prompt_said(adapter, webui):
    done = upscaled(adapter, existing(fmt="JPEG"), denoise=0.3)
    [second] = webui.passes
    assert (second.prompt, second.sampler_name, second.cfg_scale, second.steps) == ("", "DPM++ 2M", 7.0, 20)
    assert codes(done) == ["no_prompt", "image_defaults"]
    defaults = done.result.notices[1].message
    assert f"seed {second.seed}," in defaults and "20 steps" in defaults and "sampler DPM++ 2M" in defaults
    assert "CFG scale 7" in defaults and "the loaded checkpoint loaded.safetensors" in defaults
    assert "Hires upscale notes: " in done.infotext and f"seed {second.seed}" in done.infotext


def test_a_typed_prompt_is_the_passes_and_an_upscale_only_needs_nothing(adapter, webui):
    done = upscaled(adapter, existing(fmt="JPEG"), denoise=0.3, prompt="a harbour at noon", seed=7)
    assert webui.passes[0].prompt == "a harbour at noon" and webui.passes[0].seed == 7
    assert "no_prompt" not in codes(done)
    only = upscaled(adapter, existing(fmt="JPEG"), denoise=0)
    assert len(webui.passes) == 1 and only.result.image.size == (128, 128)  # no second pass ran
    assert "Hires upscale notes" not in only.infotext


def test_another_tools_prompt_is_taken_and_its_source_said(adapter, webui):
    import json

    from test_metadata import comfy_graph

    done = upscaled(adapter, existing({"prompt": json.dumps(comfy_graph())}), denoise=0.3)
    second = webui.passes[0]
    assert (second.prompt, second.negative_prompt, second.seed) == ("a bottle with a galaxy inside",
                                                                    "text, watermark", 156680208700286)
    [source] = [n for n in done.result.notices if n.code == "prompt_source"]
    assert source.message == "The prompt came from ComfyUI's record: the ComfyUI graph, node 6."


def test_the_webuis_own_png_says_nothing_more(adapter, webui):

    done = upscaled(adapter, existing({"parameters": PARAMETERS}), denoise=0.3)
    assert webui.passes[0].seed == 1234 and webui.passes[0].prompt.startswith("a lighthouse at dusk")
    assert codes(done) == ["image_checkpoint_missing"]  # its "Model: sd15" is not in the stand-in: only that is said
    assert done.infotext.startswith(PARAMETERS.split("\n")[0])


def test_an_unreadable_record_is_refused_for_a_second_pass_without_a_typed_prompt(adapter, webui):
    from hires_upscale.errors import ParamsError

    broken = {"parameters": '{"prompt": "cut off'}
    with pytest.raises(ParamsError, match="could not be read"):
        upscaled(adapter, existing(broken), denoise=0.3)
    assert webui.passes == []
    assert upscaled(adapter, existing(broken), denoise=0.3, prompt="typed").result.image.size == (128, 128)
    assert upscaled(adapter, existing(broken), denoise=0).result.image.size == (128, 128)


def test_the_distilled_cfg_an_image_says_is_carried_and_written_where_the_model_reads_it(adapter, webui):
    """Forge's Flux dev: the image's "Distilled CFG Scale" (or Forge Neo's "Shift") goes into the pass, and
    the infotext says what the pass ran with; the override replaces it."""
    parameters = "a harbour\nSteps: 20, Sampler: Euler, CFG scale: 1, Seed: 5, Distilled CFG Scale: 2.5, Size: 64x64"
    image = existing({"parameters": parameters})
    flux = session(adapter, guidance="distilled CFG")
    carried = adapter.service.upscale_existing(image, base(denoise=0.3), flux)
    assert webui.passes[-1].distilled_cfg_scale == 2.5 and "Hires upscale distilled cfg: 2.5" in carried.infotext
    overridden = adapter.service.upscale_existing(image, base(denoise=0.3, distilled_cfg=4), flux)
    assert webui.passes[-1].distilled_cfg_scale == 4 and "Hires upscale distilled cfg: 4" in overridden.infotext
    shifted = existing({"parameters": parameters.replace("Distilled CFG Scale", "Shift")})
    adapter.service.upscale_existing(shifted, base(denoise=0.3), session(adapter, guidance="shift"))
    assert webui.passes[-1].distilled_cfg_scale == 2.5


def test_a_distilled_cfg_the_model_does_not_read_is_said_once_and_not_written(adapter, webui):
    done = adapter.service.upscale_existing(existing(), base(denoise=0.3, distilled_cfg=4, passes=2, scale=4),
                                            session(adapter))
    assert "Hires upscale distilled cfg" not in done.infotext
    assert codes(done).count("distilled_cfg_unused") == 1 and len(webui.passes) == 2


def base(**values):
    from hires_upscale.params import HiresParams

    return HiresParams.from_mapping({"enabled": True, "upscaler": "Lanczos", "prompt": "a harbour", **values})
