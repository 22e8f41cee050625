"""Gradio: the accordion in txt2img/img2img, the "Hires upscale" tab, the settings section.

Every component has a stable elem_id starting with `hires_upscale_`. The
accordion's components are returned in `service.SCRIPT_FIELDS` order, which is
the order of the script's arguments (and of `alwayson_scripts` "args").
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from ..advice import Advice
from ..errors import HiresUpscaleError, ImageLoadError, ParamsError
from ..images import open_image
from ..params import FIT_MODES, RESIZE_MODES, SCRIPT_FIELDS, TILED_MODES, HiresParams
from ..plan import make_plan
from ..resolution import PRESETS
from . import compat
from .backend import default_upscaler, upscaler_choices
from .service import (
    SAME,
    Skipped,
    base_params,
    save_dropped,
    upscale_existing,
    upscale_folder,
)

PRESET_NAMES = list(dict.fromkeys(p.name for presets in PRESETS.values() for p in presets))
HINTS = {
    "upscaler": "ESRGAN-family models (4x-UltraSharp, Remacri, anime models) add detail; Latent modes need "
                "denoise 0.5 or more.",
    "denoise": "How much the second pass may change: 0.2-0.45 with ESRGAN-family upscalers, 0.5-0.7 with Latent. "
               "Higher invents detail and duplicates subjects.",
    "hires_steps": "Sampling steps of the second pass; 0 = the same as the first pass. 10-20 is plenty.",
    "tiled": "Low-VRAM mode for the second pass (tiled VAE and UNet). auto: only when it would not fit in free "
             "GPU memory, or after running out of it; on: always (4-8 GB cards, very large targets); off: never.",
    "sharpen": "One gentle unsharp mask on the final image only.",
}


def advice_html(advice: list[Advice] | tuple[Advice, ...], error: str | None = None) -> str:
    """The warnings area: one line per advice, or the validation error."""
    if error:
        return f"<div class='hires-upscale-advice'><p class='hires-upscale-error'>{html.escape(error)}</p></div>"
    items = "".join(f"<p class='hires-upscale-{a.level}' data-code='{a.code}'>{html.escape(a.message)}</p>"
                    for a in advice)
    return f"<div class='hires-upscale-advice'>{items}</div>"


def _preview(params: HiresParams) -> str:
    """The size preview and advice as the page first shows it; javascript/hires_upscale.js
    keeps it current as the user changes values."""
    try:
        plan = make_plan((512, 512), params, compat.model_family_loaded())
    except HiresUpscaleError as error:
        return advice_html([], str(error))
    (w, h), (tw, th) = plan.source, plan.target
    return f"<p class='hires-upscale-size'>{w}x{h} → {tw}x{th}</p>" + advice_html(plan.advice)


def _visible_when(value: Any) -> Any:
    return gr.update(visible=bool(value))


def _resize_controls(mode: str) -> list[Any]:
    return [gr.update(visible=mode == "scale"), gr.update(visible=mode == "size"),
            gr.update(visible=mode == "size"), gr.update(visible=mode == "preset")]


class AccordionUI:
    """Builds the accordion of one tab and knows its components."""

    def __init__(self, is_img2img: bool) -> None:
        self.tab = "img2img" if is_img2img else "txt2img"
        self.components: dict[str, Any] = {}

    def _id(self, name: str) -> str:
        return f"hires_upscale_{self.tab}_{name}"

    def build(self) -> list[Any]:
        defaults = HiresParams()
        c = self.components
        with compat.input_accordion(False, "Hires upscale", self._id("enabled")) as enabled:
            c["enabled"] = enabled
            with gr.Row():
                c["upscaler"] = gr.Dropdown(upscaler_choices(), value=default_upscaler(), label="Upscaler",
                                            elem_id=self._id("upscaler"), info=HINTS["upscaler"])
                refresh = compat.tool_button("\U0001f504", self._id("refresh"), "Refresh the list of upscalers")
            with gr.Row():
                c["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=defaults.resize_mode, label="Resize by",
                                            elem_id=self._id("resize_mode"))
                c["scale"] = gr.Slider(1.0, 8.0, step=0.05, value=defaults.scale, label="Scale",
                                       elem_id=self._id("scale"))
            with gr.Row():
                c["width"] = gr.Slider(0, 8192, step=64, value=0, label="Width (0 = from aspect)",
                                       elem_id=self._id("width"), visible=False)
                c["height"] = gr.Slider(0, 8192, step=64, value=0, label="Height (0 = from aspect)",
                                        elem_id=self._id("height"), visible=False)
            with gr.Row():
                c["preset"] = gr.Dropdown(PRESET_NAMES, value="2x", label="Preset", elem_id=self._id("preset"),
                                          visible=False)
                c["fit"] = gr.Radio(list(FIT_MODES), value=defaults.fit, label="When the aspect differs",
                                    elem_id=self._id("fit"))
            with gr.Row():
                c["denoise"] = gr.Slider(0.0, 1.0, step=0.01, value=defaults.denoise, label="Denoising strength",
                                         elem_id=self._id("denoise"), info=HINTS["denoise"])
                c["hires_steps"] = gr.Slider(0, 150, step=1, value=defaults.hires_steps, label="Hires steps",
                                             elem_id=self._id("hires_steps"), info=HINTS["hires_steps"])
            with gr.Row():
                c["sampler"] = gr.Dropdown([SAME, *compat.sampler_names()], value=SAME, label="Hires sampler",
                                           elem_id=self._id("sampler"))
                schedulers = compat.scheduler_names()
                c["scheduler"] = gr.Dropdown([SAME, *schedulers], value=SAME, label="Hires schedule type",
                                             elem_id=self._id("scheduler"), visible=bool(schedulers))
            with gr.Row():
                c["tiled"] = gr.Radio(list(TILED_MODES), value=defaults.tiled, label="Tiled (low VRAM)",
                                      elem_id=self._id("tiled"), info=HINTS["tiled"])
                c["tile_size"] = gr.Slider(0, 2048, step=32, value=defaults.tile_size, visible=False,
                                           label="Tile size (0 = from free memory)", elem_id=self._id("tile_size"))
            with gr.Row():
                c["sharpen"] = gr.Checkbox(defaults.sharpen, label="Sharpen", elem_id=self._id("sharpen"),
                                           info=HINTS["sharpen"])
                c["sharpen_strength"] = gr.Slider(0.0, 1.0, step=0.05, value=defaults.sharpen_strength,
                                                  label="Sharpen strength", elem_id=self._id("sharpen_strength"),
                                                  visible=False)
            gr.HTML(_preview(HiresParams(upscaler=c["upscaler"].value)), elem_id=self._id("advice"))

        refresh.click(fn=self._refresh, inputs=[], outputs=[c["upscaler"]])
        # Controls that do not apply stay hidden (also after a paste, which fires .change).
        c["resize_mode"].change(fn=_resize_controls, inputs=[c["resize_mode"]],
                                outputs=[c["scale"], c["width"], c["height"], c["preset"]], show_progress=False)
        c["tiled"].change(fn=lambda mode: gr.update(visible=mode == "on"), inputs=[c["tiled"]],
                          outputs=[c["tile_size"]], show_progress=False)
        c["sharpen"].change(fn=_visible_when, inputs=[c["sharpen"]], outputs=[c["sharpen_strength"]],
                            show_progress=False)
        return [c[name] for name in SCRIPT_FIELDS]

    @staticmethod
    def _refresh() -> Any:
        compat.refresh_upscalers()
        return gr.update(choices=upscaler_choices())

    def infotext_fields(self) -> list[tuple[Any, Any]]:
        """Paste bindings: every control follows a pasted infotext; ours absent = accordion closed.

        "Send to txt2img/img2img" pastes the image's infotext through these as well, so no
        `paste_field_names` are needed (they only match string keys, and ours read the text)."""

        def value_of(name: str):
            def read(fields: dict[str, Any]) -> Any:
                try:
                    params = HiresParams.from_infotext_fields({k: str(v) for k, v in fields.items()})
                except HiresUpscaleError:
                    return None
                if params is None:
                    return False if name == "enabled" else None
                value = getattr(params, name)
                if name in ("sampler", "scheduler") and not value:
                    return SAME
                return value

            return read

        return [(self.components[name], value_of(name)) for name in SCRIPT_FIELDS]


# -- the tab ----------------------------------------------------------------------

def _tab_params(upscaler, scale, denoise, hires_steps, sharpen_strength, negative, seed, cfg) -> HiresParams:
    overrides: dict[str, Any] = {
        "upscaler": upscaler, "scale": scale, "denoise": denoise, "hires_steps": hires_steps,
        "sharpen": sharpen_strength > 0, "seed": int(seed), "cfg_scale": cfg,
    }
    if sharpen_strength > 0:
        overrides["sharpen_strength"] = sharpen_strength
    if negative.strip():
        overrides["negative_prompt"] = negative
    return base_params(overrides)


def _report_rows(rows: list[tuple[str, str, str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td><td>{html.escape(d)}</td></tr>"
                   for a, b, c, d in rows)
    return ("<table class='hires-upscale-report'><thead><tr><th>image</th><th>before</th><th>after</th>"
            f"<th>notes</th></tr></thead><tbody>{body}</tbody></table>")


def _run_tab(files, folder, output_folder, upscaler, scale, denoise, hires_steps, sharpen_strength,
             negative, seed, cfg):
    params = _tab_params(upscaler, scale, denoise, hires_steps, sharpen_strength, negative, seed, cfg)
    gallery: list[Any] = []
    rows: list[tuple[str, str, str, str]] = []

    def add(done) -> None:
        (w, h), (tw, th) = done.result.plan.source, done.result.image.size
        notes = "; ".join(a["message"] for a in done.result.advice)
        if done.result.interrupted:
            notes = "interrupted; " + notes
        if done.output is not None:
            notes = f"saved {done.output}; " + notes
        gallery.append((done.result.image, f"{done.name}: {w}x{h} → {tw}x{th}"))
        rows.append((done.name, f"{w}x{h}", f"{tw}x{th}", notes.strip("; ")))

    if folder and folder.strip():
        for item in upscale_folder(folder.strip(), (output_folder or "").strip(), params):
            if isinstance(item, Skipped):
                rows.append((item.source.name, "", "", f"skipped: {item.reason}"))
            else:
                add(item)
    for file in files or []:
        path = Path(getattr(file, "name", file))
        try:
            done = upscale_existing(open_image(path), params, name=path.name)
        except (ImageLoadError, ParamsError) as error:  # this file, not the run
            rows.append((path.name, "", "", f"skipped: {error}"))
            continue
        if not done.result.interrupted:
            save_dropped(done)
        add(done)
    if not rows:
        return gallery, advice_html([], "Drop one or more images, or name a folder.")
    return gallery, _report_rows(rows)


def build_tab() -> list[tuple[Any, str, str]]:
    """The "Hires upscale" tab for images that already exist."""
    defaults = HiresParams()
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column():
                files = gr.File(label="Images made by the WebUI (prompt and seed are read from their PNG info)",
                                file_count="multiple", file_types=["image"], elem_id="hires_upscale_tab_files")
                folder = gr.Textbox(label="…or a folder of images", placeholder="outputs/txt2img-images/2026-11-26",
                                    elem_id="hires_upscale_tab_folder")
                output_folder = gr.Textbox(label="Output folder for folder mode (empty: outputs/hires-upscale)",
                                           elem_id="hires_upscale_tab_output_folder")
                with gr.Row():
                    upscaler = gr.Dropdown(upscaler_choices(), value=default_upscaler(), label="Upscaler",
                                           elem_id="hires_upscale_tab_upscaler", info=HINTS["upscaler"])
                    scale = gr.Slider(1.0, 4.0, step=0.05, value=defaults.scale, label="Scale",
                                      elem_id="hires_upscale_tab_scale")
                with gr.Row():
                    denoise = gr.Slider(0.0, 1.0, step=0.01, value=defaults.denoise, label="Denoising strength",
                                        elem_id="hires_upscale_tab_denoise", info=HINTS["denoise"])
                    hires_steps = gr.Slider(0, 150, step=1, value=0, label="Hires steps",
                                            elem_id="hires_upscale_tab_hires_steps", info=HINTS["hires_steps"])
                with gr.Row():
                    sharpen = gr.Slider(0.0, 1.0, step=0.05, value=0.0, label="Sharpen (0 = off)",
                                        elem_id="hires_upscale_tab_sharpen")
                    seed = gr.Number(-1, label="Seed (-1 = the image's own)", precision=0,
                                     elem_id="hires_upscale_tab_seed")
                    cfg = gr.Number(0, label="CFG scale (0 = the image's own)", elem_id="hires_upscale_tab_cfg")
                negative = gr.Textbox(label="Negative prompt (empty = the image's own)", lines=2,
                                      elem_id="hires_upscale_tab_negative")
                run = gr.Button("Upscale", variant="primary", elem_id="hires_upscale_tab_run")
            with gr.Column():
                gallery = gr.Gallery(label="Results", elem_id="hires_upscale_tab_gallery", columns=2)
                report = gr.HTML(elem_id="hires_upscale_tab_report")
        run.click(
            fn=compat.gpu_call(_run_tab, extra_outputs=[[]]),
            inputs=[files, folder, output_folder, upscaler, scale, denoise, hires_steps, sharpen, negative, seed, cfg],
            outputs=[gallery, report],
        )
    return [(tab, "Hires upscale", "hires_upscale_tab")]


def add_settings() -> None:
    """The "Hires upscale" section of the WebUI's settings."""
    options = {
        "hires_upscale_default_upscaler": compat.option_info(
            "", "Default upscaler (empty: the first ESRGAN-family model file, else Lanczos)", gr.Dropdown,
            lambda: {"choices": ["", *upscaler_choices()]}),
        "hires_upscale_tile_size": compat.option_info(
            0, "Upscaler tile size in pixels (0: chosen from free memory; --hires-upscale-tile-size overrides)",
            gr.Slider, {"minimum": 0, "maximum": 2048, "step": 32}),
        "hires_upscale_fp32": compat.option_info(
            False, "Run upscaler models in fp32 (slower; only if fp16/bf16 output looks wrong)"),
        "hires_upscale_allowed_folders": compat.option_info(
            "", "Folders the Hires upscale tab and API may read and write, one per line (the WebUI's output "
            "folders are always allowed)", gr.Textbox, {"lines": 3}),
        "hires_upscale_output_dir": compat.option_info(
            "", "Output folder of the Hires upscale tab (empty: outputs/hires-upscale)"),
        "hires_upscale_serve_webui": compat.option_info(
            False, "Serve the WebUI's own ESRGAN-family upscalers (Extras, built-in Hires fix, other extensions) "
            "with this extension's faster engine; falls back to the WebUI's code on any error"),
        "hires_upscale_save_first_pass": compat.option_info(
            False, "Also save each image before its hires upscale (suffix -before-hires-upscale)"),
    }
    for key, info in options.items():
        compat.add_option(key, info)
