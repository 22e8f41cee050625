"""The orchestrator, driven through a recording img2img stand-in.

The stand-in is a test double for the WebUI: it proves the order of stages,
what the second pass receives, progress and interruption. That the WebUI's own
img2img does the second pass is proven in tests/webui against a real WebUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import noise_image
from PIL import Image, ImageFilter, ImageStat

from hires_upscale.errors import Interrupted
from hires_upscale.params import HiresParams
from hires_upscale.pipeline import COLOR_FIX, SECOND_PASS, SHARPEN, UPSCALE, Pipeline
from hires_upscale.plan import PASS_BEGINS, Plan
from hires_upscale.upscaler import load_model, resolve_upscaler


@dataclass
class RecordingImg2Img:
    model_family: str = "sd15"
    steps_before_stop: int | None = None
    calls: list[tuple[tuple[int, int], Plan]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def second_pass(self, images, plan, *, progress, should_stop, notify):
        self.calls.append((images[0].size, plan))
        self.batches.append(len(images))
        steps = plan.steps or 1
        for step in range(steps):
            if should_stop():
                raise Interrupted(f"stopped at step {step}")
            progress(step + 1, steps)
        return [image.resize(plan.target).filter(ImageFilter.SMOOTH) for image in images]


def lanczos_pipeline(backend=None) -> Pipeline:
    return Pipeline(lambda name: resolve_upscaler(name), backend)


def test_stages_in_order_with_progress(rrdb_small):
    backend = RecordingImg2Img()
    seen = []
    pipeline = Pipeline(lambda name: load_model(rrdb_small, device="cpu"), backend)
    params = HiresParams(enabled=True, upscaler="4x-test", scale=2, hires_steps=3, sharpen=True)
    result = pipeline.run(noise_image(64, 48), params, first_pass_steps=20,
                          progress=lambda *event: seen.append(event))
    assert result.stages == [UPSCALE, SECOND_PASS, COLOR_FIX, SHARPEN] and not result.interrupted
    assert result.image.size == (128, 128)  # 96 snaps to 128: 64x48 * 2 = 128x96 -> 128x128 cropped
    assert backend.calls[0][0] == (128, 128) and backend.calls[0][1].steps == 3
    assert [e[0] for e in seen] == [UPSCALE, SECOND_PASS, SECOND_PASS, SECOND_PASS, COLOR_FIX, SHARPEN]
    assert seen[-3] == (SECOND_PASS, 3, 3)
    assert result.infotext_fields["Hires upscale to"] == "128x128"


def test_hires_steps_zero_means_the_first_pass_steps():
    backend = RecordingImg2Img()
    lanczos_pipeline(backend).run(noise_image(64, 64), HiresParams(enabled=True), first_pass_steps=7)
    assert backend.calls[0][1].steps == 7


def test_latent_upscalers_hand_the_source_to_the_backend():
    backend = RecordingImg2Img()
    result = lanczos_pipeline(backend).run(noise_image(64, 64), HiresParams(upscaler="Latent", denoise=0.6))
    assert backend.calls[0][0] == (64, 64) and result.stages == [SECOND_PASS, COLOR_FIX]
    assert result.image.size == (128, 128)


def test_denoise_zero_is_upscale_only():
    backend = RecordingImg2Img()
    result = lanczos_pipeline(backend).run(noise_image(64, 64), HiresParams(denoise=0))
    assert backend.calls == [] and result.stages == [UPSCALE] and result.image.size == (128, 128)


def test_sharpen_runs_once_on_the_final_image():
    class Spy(RecordingImg2Img):
        def second_pass(self, images, plan, *, progress, should_stop, notify):
            self.received = images[0].copy()
            return super().second_pass(images, plan, progress=progress, should_stop=should_stop, notify=notify)

    backend = Spy()
    plain = lanczos_pipeline(backend).run(noise_image(64, 64), HiresParams(sharpen=False)).image
    unsharpened_input = backend.received
    sharpened = lanczos_pipeline(backend).run(noise_image(64, 64), HiresParams(sharpen=True)).image
    assert backend.received.tobytes() == unsharpened_input.tobytes()  # not sharpened before the pass
    assert sharpened.tobytes() != plain.tobytes()


@pytest.mark.reliability(area="Pipeline", tried="an interrupt before and during the second pass",
                         expected="the last finished stage is kept, marked interrupted")
def test_interruption_keeps_the_last_finished_stage():
    source = noise_image(64, 64)
    stop_now = lanczos_pipeline(RecordingImg2Img()).run(source, HiresParams(), should_stop=lambda: True)
    assert stop_now.interrupted and stop_now.stages == [] and stop_now.image is source

    backend = RecordingImg2Img()
    asked = []

    def stop_during_second_pass():
        asked.append(1)
        return len(asked) > 2

    result = lanczos_pipeline(backend).run(source, HiresParams(hires_steps=5), should_stop=stop_during_second_pass)
    assert result.interrupted and result.stages == [UPSCALE]
    assert result.image.size == (128, 128)


def test_without_a_backend_it_upscales_and_sharpens():
    result = lanczos_pipeline().run(noise_image(50, 40), HiresParams(sharpen=True, scale=1.5))
    assert result.stages == [UPSCALE, SHARPEN] and result.image.size == (64, 64)
    exact = Pipeline(resolve_upscaler, snap_multiple=1).run(noise_image(50, 40), HiresParams(scale=1.5))
    assert exact.image.size == (75, 60)


def test_advice_travels_with_the_result():
    result = lanczos_pipeline(RecordingImg2Img()).run(noise_image(64, 64), HiresParams(denoise=0.7))
    assert [a["code"] for a in result.advice] == ["high_denoise"]
    assert isinstance(result.image, Image.Image)


# -- transparency: kept when only upscaling; around a second pass, flattened for it and put back ---

def half_transparent(mode: str) -> Image.Image:
    """Left half fully transparent, right half opaque."""
    image = noise_image(64, 64).convert(mode)
    alpha = Image.new("L", (64, 64), 0)
    alpha.paste(255, (32, 0, 64, 64))
    image.putalpha(alpha)
    return image


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("upscaler", ["lanczos", "model"])
@pytest.mark.reliability(area="Images", tried="RGBA and LA inputs upscaled only (Lanczos and a model)",
                         expected="transparency kept")
def test_upscale_only_keeps_the_alpha(mode, upscaler, rrdb_small):
    pipeline = Pipeline(lambda name: load_model(rrdb_small, device="cpu") if upscaler == "model"
                        else resolve_upscaler("lanczos"), RecordingImg2Img())
    result = pipeline.run(half_transparent(mode), HiresParams(denoise=0))
    # an RGB model turns gray into RGB (LA -> RGBA), like an L input; the alpha stays either way
    assert result.image.mode == (mode if upscaler == "lanczos" else "RGBA") and result.image.size == (128, 128)
    alpha = result.image.getchannel("A")
    assert alpha.getpixel((2, 64)) == 0 and alpha.getpixel((125, 64)) == 255
    assert result.notices == []


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("background, expected", [(None, (255, 255, 255)), ("#102030", (16, 32, 48))])
@pytest.mark.reliability(area="Images", tried="RGBA and LA inputs with a second pass",
                         expected="the pass gets them flattened onto the WebUI's background colour; the result "
                         "is RGBA with the upscaled alpha, told as 'alpha_kept'")
def test_a_second_pass_gets_the_image_flattened_and_the_result_its_alpha_back(mode, background, expected):
    class Spy(RecordingImg2Img):
        def second_pass(self, images, plan, *, progress, should_stop, notify):
            self.received = images[0].copy()
            return super().second_pass(images, plan, progress=progress, should_stop=should_stop, notify=notify)

    backend = Spy()
    if background is not None:
        backend.background = background  # the WebUI's img2img_background_color
    result = lanczos_pipeline(backend).run(half_transparent(mode), HiresParams(denoise=0.3))
    assert backend.received.mode == "RGB" and backend.received.getpixel((2, 64)) == expected
    assert result.image.mode == "RGBA" and result.image.size == (128, 128)
    alpha = result.image.getchannel("A")
    assert alpha.getpixel((2, 64)) == 0 and alpha.getpixel((125, 64)) == 255
    [notice] = [a for a in result.advice if a["code"] == "alpha_kept"]
    assert notice["field"] == "image" and (background or "#ffffff") in notice["message"]


def test_a_batch_goes_through_one_second_pass_and_each_image_keeps_its_own_pixels():
    backend = RecordingImg2Img()
    sources = [noise_image(64, 48, seed=seed) for seed in (1, 2, 3)]
    pipeline = lanczos_pipeline(backend)
    results = pipeline.run_batch(sources, pipeline.plan(sources[0], HiresParams(hires_steps=2, sharpen=True)))
    assert backend.batches == [3]
    assert [r.image.size for r in results] == [(128, 128)] * 3  # 96 snapped to 128
    assert [r.stages for r in results] == [[UPSCALE, SECOND_PASS, COLOR_FIX, SHARPEN]] * 3
    alone = [lanczos_pipeline(RecordingImg2Img()).run(s, HiresParams(hires_steps=2, sharpen=True)).image
             for s in sources]
    assert [r.image.tobytes() for r in results] == [a.tobytes() for a in alone]


def test_an_interrupt_in_a_batch_leaves_every_image_at_the_stage_all_finished():
    backend = RecordingImg2Img()
    calls = iter(range(1000))
    # the second image's upscale asks whether to stop: the first one is upscaled by then
    pipeline = lanczos_pipeline(backend)
    images = [noise_image(64, 64, seed=1), noise_image(64, 64, seed=2)]
    results = pipeline.run_batch(images, pipeline.plan(images[0], HiresParams()), should_stop=lambda: next(calls) >= 1)
    assert all(r.interrupted and r.stages == [] for r in results)
    assert [r.image.size for r in results] == [(64, 64), (64, 64)]


def test_a_batch_of_different_sizes_is_refused():
    pipeline = lanczos_pipeline()
    plan = pipeline.plan(noise_image(64, 64), HiresParams())
    with pytest.raises(ValueError, match="the plan's size"):
        pipeline.run_batch([noise_image(64, 64), noise_image(32, 64)], plan)


@pytest.mark.parametrize("params, with_backend, stages", [
    (HiresParams(upscaler="Lanczos"), True, [UPSCALE, SECOND_PASS, COLOR_FIX]),
    (HiresParams(upscaler="Lanczos", color_fix="none"), True, [UPSCALE, SECOND_PASS]),
    (HiresParams(upscaler="Lanczos", denoise=0, sharpen=True), True, [UPSCALE, SHARPEN]),
    (HiresParams(upscaler="Lanczos", sharpen=True, sharpen_strength=0), True, [UPSCALE, SECOND_PASS, COLOR_FIX]),
    (HiresParams(upscaler="Latent (bicubic)", denoise=0.6), True, [SECOND_PASS, COLOR_FIX]),  # upscaled in the pass
    (HiresParams(upscaler="Lanczos"), False, [UPSCALE]),  # no backend: the command line
])
def test_the_plan_names_the_stages_that_run_and_the_run_goes_through_exactly_those(params, with_backend, stages):
    pipeline = lanczos_pipeline(RecordingImg2Img() if with_backend else None)
    plan = pipeline.plan(noise_image(64, 64), params)
    assert list(plan.stages) == stages
    assert pipeline.run_batch([noise_image(64, 64)], plan)[0].stages == stages


class DriftingImg2Img(RecordingImg2Img):
    """A second pass that adds detail and, as samplers and VAEs do, moves the colours."""

    def second_pass(self, images, plan, *, progress, should_stop, notify):
        passed = super().second_pass(images, plan, progress=progress, should_stop=should_stop, notify=notify)
        return [Image.eval(image, lambda value: min(255, value + 24)) for image in passed]


@pytest.mark.parametrize("upscaler", ["Lanczos", "Latent (bicubic)"])
def test_the_color_fix_takes_the_colours_of_what_went_into_the_pass(upscaler):
    source = noise_image(64, 64, seed=4)
    drifted = lanczos_pipeline(DriftingImg2Img()).run(
        source, HiresParams(upscaler=upscaler, denoise=0.6, color_fix="none")).image
    fixed = lanczos_pipeline(DriftingImg2Img()).run(source, HiresParams(upscaler=upscaler, denoise=0.6)).image
    went_in = source.resize((128, 128), Image.Resampling.LANCZOS)
    mean = lambda image: sum(ImageStat.Stat(image).mean) / 3  # noqa: E731

    assert abs(mean(drifted) - mean(went_in)) > 20
    assert abs(mean(fixed) - mean(went_in)) < 1


def test_a_4x_target_in_auto_passes_runs_2x_then_2x_each_an_upscale_and_a_second_pass():
    backend = RecordingImg2Img()
    params = HiresParams(upscaler="Lanczos", scale=4, passes=0, hires_steps=2)
    pipeline = lanczos_pipeline(backend)
    plan = pipeline.plan(noise_image(64, 64), params)
    assert [(p.source, p.target, p.pass_number, p.pass_count) for p in plan.passes] == [
        ((64, 64), (128, 128), 1, 2), ((128, 128), (256, 256), 2, 2)]
    assert not [a for a in plan.advice if a.code == "large_pass_scale"]  # 2x per pass: nothing to warn of
    seen = []
    result = pipeline.run_batch([noise_image(64, 64)], plan, progress=lambda *event: seen.append(event))[0]
    assert [e for e in seen if e[0] == PASS_BEGINS] == [(PASS_BEGINS, 1, 2), (PASS_BEGINS, 2, 2)]
    first, second = (i for i, event in enumerate(seen) if event[0] == PASS_BEGINS)
    assert first == 0 and COLOR_FIX in [event[0] for event in seen[first:second]]  # pass 1 ends, then pass 2
    assert [size for size, _ in backend.calls] == [(128, 128), (256, 256)]
    assert result.image.size == (256, 256) and result.stages == [UPSCALE, SECOND_PASS, COLOR_FIX] * 2
    assert result.infotext_fields["Hires upscale to"] == "256x256"


def test_passes_reach_a_target_of_another_aspect_and_fit_it_in_the_last():
    params = HiresParams(upscaler="Lanczos", resize_mode="size", width=512, height=256, fit="crop", passes=2)
    plan = lanczos_pipeline(RecordingImg2Img()).plan(noise_image(64, 64), params)
    assert [p.target for p in plan.passes][-1] == (512, 256) and plan.passes[-1].resize.fit == "crop"
    assert plan.passes[0].target[0] == plan.passes[0].target[1]  # the source's aspect until the last pass


def test_an_interrupt_in_a_later_pass_keeps_the_last_whole_pass():
    backend = RecordingImg2Img()
    calls = []

    def stop_in_the_second_pass():  # the stop is asked during pass 2's second pass
        calls.append(1)
        return len(backend.calls) == 2 and len(calls) > 0

    pipeline = lanczos_pipeline(backend)
    plan = pipeline.plan(noise_image(64, 64), HiresParams(upscaler="Lanczos", scale=4, passes=2, hires_steps=3))
    result = pipeline.run_batch([noise_image(64, 64)], plan, should_stop=stop_in_the_second_pass)[0]
    assert result.interrupted and result.image.size == (128, 128)
    assert result.stages == [UPSCALE, SECOND_PASS, COLOR_FIX] and result.reached == "pass 1/2"


def test_one_pass_is_the_plan_itself_and_upscale_only_never_runs_in_passes():
    pipeline = lanczos_pipeline(RecordingImg2Img())
    assert pipeline.plan(noise_image(64, 64), HiresParams(scale=4)).passes == ()
    assert pipeline.plan(noise_image(64, 64), HiresParams(scale=4, passes=0, denoise=0)).passes == ()
    assert len(pipeline.plan(noise_image(64, 64), HiresParams(scale=8, passes=0)).passes) == 3


def test_an_alpha_with_nothing_transparent_is_no_transparency():
    """A gallery hands back an RGB picture as RGBA, its alpha all opaque: nothing to keep, nothing to say."""
    image = noise_image(64, 64).convert("RGBA")
    result = lanczos_pipeline(RecordingImg2Img()).run(image, HiresParams(denoise=0.3))
    assert result.image.mode == "RGB" and [a["code"] for a in result.advice if a["code"] == "alpha_kept"] == []
