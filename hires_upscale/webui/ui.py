"""Gradio: the accordion in txt2img/img2img, the "Hires upscale" tab, the settings section.

Every component has a stable elem_id starting with `hires_upscale_`. The
accordion's components are returned in `service.SCRIPT_FIELDS` order, which is
the order of the script's arguments (and of `alwayson_scripts` "args").
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..advice import Advice
from ..batch import Skipped
from ..errors import HiresUpscaleError
from ..images import open_image, record_of
from ..infotext import parse_parameters
from ..metadata import read_generation
from ..params import BUILT_IN_MODULES, SCRIPT_FIELDS, HiresParams
from ..plan import make_plan
from ..resolution import PRESETS
from . import carried, compat, outputs
from .backend import Session, checkpoint_titles, first_pass_checkpoint_kept, loaded_model
from .hosts import Host
from .service import (
    SAME,
    SAME_WHEN_EMPTY,
    base_params,
    page_options,
    params_from_args,
    upscale_existing,
    upscale_files,
    upscale_folder,
)
from .upscalers import default_upscaler, upscaler_choices

PRESET_NAMES = list(dict.fromkeys(p.name for presets in PRESETS.values() for p in presets))
_FIELDS = {spec.name: spec for spec in dataclasses.fields(HiresParams)}
#: Controls whose hint is shown under them; every control also has it as its hover hint (the page's
#: `titles` table, filled from `service.page_options`' `hints`).
SHOWN_HINTS = {"upscaler", "denoise", "hires_steps", "tiled", "sharpen", "color_fix"}
#: Text fields that take a line or more of prompt.
PROMPT_FIELDS = {"prompt", "negative_prompt"}


def control(name: str, elem_id: str, *, choices: list[str] | None = None, value: Any = None, **extra: Any) -> Any:
    """The Gradio control of a parameter, from its metadata in `HiresParams`: label, range, step,
    choices, default and hint exist once, there. `choices` makes a text field a dropdown (names
    the WebUI knows: upscalers, samplers, checkpoints); `value` replaces the default shown."""
    spec = _FIELDS[name]
    meta = spec.metadata
    shown = spec.default if value is None else value
    common = {"label": meta["label"], "elem_id": elem_id, **extra}
    if name in SHOWN_HINTS:
        common.setdefault("info", meta["help"])
    if isinstance(spec.default, bool):
        return gr.Checkbox(shown, **common)
    if meta["choices"]:
        return gr.Radio(list(meta["choices"]), value=shown, **common)
    if isinstance(spec.default, tuple):
        return gr.Dropdown(choices or [], value=list(shown), multiselect=True, **common)
    if choices is not None:
        return gr.Dropdown(choices, value=shown, **common)
    if isinstance(spec.default, (int, float)):
        if (meta["maximum"] - meta["minimum"]) / meta["step"] > 100_000:  # a seed: typed, not slid
            return gr.Number(shown, minimum=meta["minimum"], maximum=meta["maximum"], precision=0, **common)
        return gr.Slider(meta["minimum"], meta["maximum"], step=meta["step"], value=shown, **common)
    if name in PROMPT_FIELDS:
        common.setdefault("lines", 2)
        common.setdefault("placeholder", "empty = the first pass's; [prompt] stands for it")
    return gr.Textbox(value=shown, **common)


def advice_html(advice: list[Advice] | tuple[Advice, ...], error: str | None = None) -> str:
    """The warnings area: one line per advice, or the validation error."""
    if error:
        return f"<div class='hires-upscale-advice'><p class='hires-upscale-error'>{html.escape(error)}</p></div>"
    items = "".join(f"<p class='hires-upscale-{a.level}' data-code='{a.code}'>{html.escape(a.message)}</p>"
                    for a in advice)
    return f"<div class='hires-upscale-advice'>{items}</div>"


def _preview(params: HiresParams, family: str) -> str:
    """The size preview and advice as the page first shows it; javascript/hires_upscale.js
    keeps it current as the user changes values."""
    try:
        plan = make_plan((512, 512), params, family)
    except HiresUpscaleError as error:
        return advice_html([], str(error))
    (w, h), (tw, th) = plan.source, plan.target
    return f"<p class='hires-upscale-size'>{w}x{h} → {tw}x{th}</p>" + advice_html(plan.advice)


def page_options_box(elem_id: str, session: Session) -> Any:
    """The page's data (`service.page_options`) as a hidden text box in the page, made again each time
    the page loads (a callable value): it comes through Gradio like the page itself, behind the UI's
    login (--gradio-auth) and under --subpath, and needs no API route nor its --api-auth credentials."""
    return gr.Textbox(value=lambda: json.dumps(page_options(session)), visible=False, elem_id=elem_id)


def module_choices(host: Host) -> list[str]:
    """The Hires VAE / text encoder dropdown's names: the checkpoint's own, then the WebUI's files
    (none selected: the same as the first pass)."""
    return [BUILT_IN_MODULES, *sorted(host.module_files())]


def _overrides(add: Callable[..., Any], label: str, elem_id: str, host: Host) -> Any:
    """The second pass's overrides, folded away: checkpoint, VAE / text encoders, CFG, seed, prompts."""
    with gr.Accordion(label, open=False, elem_id=elem_id) as overrides:
        with gr.Row():
            add("checkpoint", choices=[SAME, *checkpoint_titles()], value=SAME)
            add("modules", choices=module_choices(host),
                max_choices=None if host.max_modules > 1 else 1)  # A1111 takes one VAE
        with gr.Row():
            add("cfg_scale")
            # Forge's field: A1111 has none, so it stays hidden there (and 0 = same is all it can hold)
            add("distilled_cfg", visible=host.has_distilled_cfg)
            add("seed")
        add("prompt")
        add("negative_prompt")
    return overrides


def _refresh(host: Host) -> tuple[Any, Any, Any]:
    """The refresh button: the WebUI lists its upscalers, checkpoints and VAEs again."""
    from modules import modelloader, sd_models

    modelloader.load_upscalers()
    sd_models.list_models()
    host.refresh_modules()
    return (gr.update(choices=upscaler_choices()), gr.update(choices=[SAME, *checkpoint_titles()]),
            gr.update(choices=module_choices(host)))


def _visible_when(value: Any) -> Any:
    return gr.update(visible=bool(value))


def _resize_controls(mode: str) -> list[Any]:
    return [gr.update(visible=mode == "scale"), gr.update(visible=mode == "size"),
            gr.update(visible=mode == "size"), gr.update(visible=mode == "preset")]


class AccordionUI:
    """Builds the accordion of one tab and knows its components."""

    def __init__(self, is_img2img: bool, session: Session) -> None:
        self.tab = "img2img" if is_img2img else "txt2img"
        self.session = session
        self.components: dict[str, Any] = {}

    def _id(self, name: str) -> str:
        return f"hires_upscale_{self.tab}_{name}"

    def build(self) -> list[Any]:
        c = self.components

        def add(name: str, **extra: Any) -> Any:
            c[name] = control(name, self._id(name), **extra)
            return c[name]

        from modules.ui_components import InputAccordion, ToolButton

        # InputAccordion is a class in A1111 (v1.6+), a function in Forge: both used alike
        with InputAccordion(False, label="Hires upscale", elem_id=self._id("enabled")) as enabled:
            c["enabled"] = enabled
            with gr.Row():
                add("upscaler", choices=upscaler_choices(), value=default_upscaler())
                refresh = ToolButton(value="\U0001f504", elem_id=self._id("refresh"),
                                     tooltip="Refresh the lists of upscalers, checkpoints and VAEs")
            with gr.Row():
                add("resize_mode")
                add("scale")
                add("passes")
            with gr.Row():
                add("width", visible=False)
                add("height", visible=False)
            with gr.Row():
                add("preset", choices=PRESET_NAMES, value="2x", visible=False)
                add("fit")
            with gr.Row():
                add("denoise")
                add("hires_steps")
            with gr.Row():
                add("sampler", choices=[SAME, *compat.sampler_names()], value=SAME)
                schedulers = compat.scheduler_names()
                add("scheduler", choices=[SAME, *schedulers], value=SAME, visible=bool(schedulers))
            with gr.Row():
                add("tiled")
                add("tile_size", visible=False)
            with gr.Row():
                add("color_fix")
            with gr.Row():
                add("sharpen")
                add("sharpen_strength", visible=False)
            host = self.session.host
            _overrides(add, "Second pass overrides", self._id("overrides"), host)
            gr.HTML(_preview(HiresParams(upscaler=c["upscaler"].value), host.model_family(loaded_model())),
                    elem_id=self._id("advice"))
            page_options_box(self._id("page_options"), self.session)

        refresh.click(fn=functools.partial(_refresh, host), inputs=[], outputs=[c["upscaler"], c["checkpoint"],
                                                                                  c["modules"]])
        # Controls that do not apply stay hidden (also after a paste, which fires .change).
        c["resize_mode"].change(fn=_resize_controls, inputs=[c["resize_mode"]],
                                outputs=[c["scale"], c["width"], c["height"], c["preset"]], show_progress=False)
        c["tiled"].change(fn=lambda mode: gr.update(visible=mode == "on"), inputs=[c["tiled"]],
                          outputs=[c["tile_size"]], show_progress=False)
        c["sharpen"].change(fn=_visible_when, inputs=[c["sharpen"]], outputs=[c["sharpen_strength"]],
                            show_progress=False)
        return [c[name] for name in SCRIPT_FIELDS]

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
                if not params.applies(name) and _FIELDS[name].metadata["key"] not in fields:
                    return None  # not used by the pasted run, so not written: the control keeps its value
                value = getattr(params, name)
                if name in SAME_WHEN_EMPTY and not value:
                    return SAME
                return list(value) if isinstance(value, tuple) else value

            return read

        return [(self.components[name], value_of(name)) for name in SCRIPT_FIELDS]


# -- ✨ under the gallery --------------------------------------------------------------

class GalleryButton:
    """✨ Hires upscale under a tab's gallery, beside the WebUI's own buttons: the selected image through
    the accordion's current settings with its own prompt and seed (no first pass again). The result
    takes its place in the gallery and is saved where and as the WebUI saves that tab's images.

    The button goes into the WebUI's button row, and is wired once the gallery's parts exist, through
    the scripts' public `on_after_component` (v1.6+)."""

    def __init__(self, accordion: AccordionUI, session: Session) -> None:
        self.accordion, self.session = accordion, session
        self.parts: dict[str, Any] = {}

    @property
    def elem_id(self) -> str:
        return f"hires_upscale_{self.accordion.tab}_gallery_upscale"

    def hook(self, script: Any) -> None:
        tab = self.accordion.tab

        def keep(name: str) -> Callable[[Any], None]:
            return lambda made: self.parts.__setitem__(name, made.component)

        for elem_id, name in ((f"{tab}_gallery", "gallery"), (f"html_info_{tab}", "info"), (f"html_log_{tab}", "log")):
            script.on_after_component(keep(name), elem_id=elem_id)
        script.on_after_component(self._add_button, elem_id=f"{tab}_send_to_extras")
        script.on_after_component(self._wire, elem_id=f"generation_info_{tab}")

    def _add_button(self, made: Any) -> None:
        from modules.ui_components import ToolButton

        # made inside the WebUI's row of image buttons: it joins them
        self.parts["button"] = ToolButton("\u2728", elem_id=self.elem_id, elem_classes=["hires-upscale-gallery-button"],
                                          tooltip="Hires upscale: the selected image with this tab's Hires upscale "
                                          "settings, its own prompt and seed (no first pass again)")

    def _wire(self, made: Any) -> None:
        from modules.call_queue import wrap_gradio_gpu_call

        parts = self.parts
        missing = {"gallery", "button", "info", "log"} - set(parts)
        if missing:
            raise RuntimeError(f"the WebUI's {self.accordion.tab} gallery has no {', '.join(sorted(missing))} "
                               "where this extension looks for them")
        parts["button"].click(
            fn=wrap_gradio_gpu_call(self._upscale, extra_outputs=[None, "", ""]),
            # the button's own value is the placeholder for the selected index (the WebUI's own buttons do so)
            _js="(...args) => { args[1] = selected_gallery_index(); return args; }",
            inputs=[parts["gallery"], parts["button"], made.component,
                    *(self.accordion.components[name] for name in SCRIPT_FIELDS)],
            outputs=[parts["gallery"], made.component, parts["info"], parts["log"]],
        )

    def _upscale(self, gallery: list[Any], index: Any, generation_info: str, *args: Any) -> tuple[Any, str, str, str]:
        from modules import images, shared

        if not gallery:
            return gallery, generation_info, "", _html_lines(["Generate an image first: the gallery is empty."])
        index = int(index) if isinstance(index, (int, float)) and 0 <= index < len(gallery) else 0
        generation = json.loads(generation_info or "{}")
        infotexts = generation.get("infotexts") or []
        if len(gallery) > 1 and index < int(generation.get("index_of_first_image", 0)):
            return gallery, generation_info, "", _html_lines(["That is the grid: select one image of it."])
        image = compat.image_from_gallery(gallery[index])
        if index < len(infotexts):
            image.info["parameters"] = infotexts[index]
        params = params_from_args(args)
        if not params.enabled:  # the button asks for it, the accordion's switch is for the next generation
            params = HiresParams.from_mapping({**params.as_dict(), "enabled": True})
        with first_pass_checkpoint_kept(self.session.host):
            done = upscale_existing(image, params, self.session, f"image {index + 1}")
        said = [a["message"] for a in done.result.advice]
        if getattr(shared.opts, "samples_save", True):
            tab = self.accordion.tab
            # as the WebUI picks it: the one folder for all images when set, else the tab's
            folder = shared.opts.outdir_samples or getattr(shared.opts, f"outdir_{tab}_samples", "")
            info = parse_parameters(done.infotext)  # the seed and prompt the pass ran with
            saved, _ = images.save_image(done.result.image, folder, "", info.seed, info.prompt,
                                         shared.opts.samples_format, info=done.infotext)
            said.insert(0, f"Saved {saved}.")
        infotexts = infotexts + [""] * (index + 1 - len(infotexts))
        infotexts[index] = done.infotext
        generation["infotexts"] = infotexts
        kept = [_gallery_entry(item) for item in gallery]
        kept[index] = done.result.image
        return kept, json.dumps(generation), _html_lines(done.infotext.split("\n")), _html_lines(said)


def _gallery_entry(item: Any) -> Any:
    """A gallery entry as the page sent it, in a form the gallery takes back: Gradio 3's file dict as
    its path, Gradio 4's (image, caption) pair as it is."""
    if isinstance(item, dict) and item.get("name"):
        return str(item["name"]).rsplit("?", 1)[0]
    return item


def _html_lines(lines: list[str]) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines if line)


# -- the tab ----------------------------------------------------------------------

#: The tab's parameter controls, in the order `_run_tab` receives them.
TAB_FIELDS = ("upscaler", "scale", "denoise", "hires_steps", "sharpen", "sharpen_strength",
              "checkpoint", "prompt", "negative_prompt", "cfg_scale", "seed", "color_fix", "passes", "modules",
              "distilled_cfg")


def _tab_params(values: tuple[Any, ...]) -> HiresParams:
    overrides = dict(zip(TAB_FIELDS, values, strict=True))
    if overrides["checkpoint"] in (SAME, None):
        overrides["checkpoint"] = ""
    return base_params(overrides)


def _report_rows(rows: list[tuple[str, str, str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td><td>{html.escape(d)}</td></tr>"
                   for a, b, c, d in rows)
    return ("<table class='hires-upscale-report'><thead><tr><th>image</th><th>before</th><th>after</th>"
            f"<th>notes</th></tr></thead><tbody>{body}</tbody></table>")


#: The tab's output formats: PNG, or the input's own where it is JPEG or WebP.
TAB_FORMATS = ("PNG", "Same as the input (JPEG, WebP)")


def _run_tab(session: Session, files, folder, output_folder, output_format, *values):
    params = _tab_params(values)
    same = output_format == TAB_FORMATS[1]
    rows: list[tuple[str, str, str, str]] = []
    gallery: list[Any] = []
    with first_pass_checkpoint_kept(session.host):  # the images' own checkpoints load once each
        if folder and folder.strip():
            _report(upscale_folder(folder.strip(), (output_folder or "").strip(), params, session, same_format=same),
                    gallery, rows)
        dropped = [Path(getattr(file, "name", file)) for file in files or []]
        if dropped:
            _report(upscale_files(dropped, outputs.default_output_folder(), params, session, existing="new name",
                                  same_format=same), gallery, rows)
    if not rows:
        return gallery, advice_html([], "Drop one or more images, or name a folder.")
    return gallery, _report_rows(rows)


def _report(outcomes, gallery: list[Any], rows: list[tuple[str, str, str, str]]) -> None:
    """The tab's gallery and table rows for the outcomes of a run over files."""
    for outcome in outcomes:
        if isinstance(outcome, Skipped):
            rows.append((outcome.source.name, "", "", f"skipped: {outcome.reason}"))
            continue
        result = outcome.result
        (w, h), (tw, th) = result.plan.source, result.image.size
        notes = [a["message"] for a in result.advice]
        if outcome.output is None:
            notes.insert(0, "interrupted; not saved (a rerun redoes it)")
        else:
            notes.insert(0, f"saved {outcome.output}")
        gallery.append((result.image, f"{outcome.source.name}: {w}x{h} → {tw}x{th}"))
        rows.append((outcome.source.name, f"{w}x{h}", f"{tw}x{th}", "; ".join(notes)))


def _describe_dropped(files) -> tuple[str, Any, Any, Any]:
    """What the tab will do with the dropped files, before it runs: each file's size, prompt, seed and
    where they come from; with one file, its prompts in the override fields, opened (what the pass
    will use, to read and edit); with several or none, the fields cleared (each image's own is used)."""
    paths = [Path(getattr(file, "name", file)) for file in files or []]
    if not paths:  # the box emptied: one file's prompts must not stay as everyone's override
        return "", gr.update(value=""), gr.update(value=""), gr.update()
    rows = []
    prompts: tuple[str, str] = ("", "")
    for path in paths:
        try:
            image = open_image(path)
        except HiresUpscaleError as error:
            rows.append((path.name, "", "", f"cannot be read: {error}"))
            continue
        found = read_generation(record_of(image))
        info = found.info
        if found.found:
            source = f"{found.tool}, {found.source}" + "".join(f"; {note}" for note in found.notes)
        else:
            source = "; ".join(found.notes) or "none: type a prompt below (the second pass then has none)"
        seed = str(info.seed) if info.seed is not None else "random, said in the result"
        said = f"{info.prompt or '(no prompt)'} — from {source}"
        rows.append((path.name, f"{image.width}x{image.height}", seed, said))
        prompts = (info.prompt, info.negative_prompt)
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td>"
                   f"<td>{html.escape(d)}</td></tr>" for a, b, c, d in rows)
    table = ("<table class='hires-upscale-report'><thead><tr><th>image</th><th>size</th><th>seed</th>"
             f"<th>prompt and where it comes from</th></tr></thead><tbody>{body}</tbody></table>")
    if len(paths) > 1:
        note = "<p>Each image's own prompt is used; a prompt typed below is used for all of them.</p>"
        return table + note, gr.update(value=""), gr.update(value=""), gr.update()
    return table, gr.update(value=prompts[0]), gr.update(value=prompts[1]), gr.update(open=True)


def build_tab(session: Session) -> list[tuple[Any, str, str]]:
    """The "Hires upscale" tab for images that already exist."""
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column():
                files = gr.File(label="Images: any picture (prompt and seed are read from the WebUI's, ComfyUI's, "
                                      "NovelAI's, InvokeAI's, Fooocus's or SwarmUI's record; a photo has none)",
                                file_count="multiple", file_types=["image"], elem_id="hires_upscale_tab_files")
                dropped = gr.HTML(elem_id="hires_upscale_tab_dropped")
                folder = gr.Textbox(label="…or a folder of images", placeholder="outputs/txt2img-images/2026-11-26",
                                    elem_id="hires_upscale_tab_folder")
                output_folder = gr.Textbox(label="Output folder for folder mode (empty: outputs/hires-upscale)",
                                           elem_id="hires_upscale_tab_output_folder")
                c: dict[str, Any] = {}

                def add(name: str, **extra: Any) -> None:
                    c[name] = control(name, f"hires_upscale_tab_{name}", **extra)

                with gr.Row():
                    add("upscaler", choices=upscaler_choices(), value=default_upscaler())
                    add("scale")
                    add("passes")
                with gr.Row():
                    add("denoise")
                    add("hires_steps")
                add("color_fix")
                with gr.Row():
                    add("sharpen")
                    add("sharpen_strength")
                overrides = _overrides(add, "Second pass overrides (empty, 0 or -1: as the image says)",
                                       "hires_upscale_tab_overrides", session.host)
                output_format = gr.Radio(list(TAB_FORMATS), value=TAB_FORMATS[0], label="Output format",
                                         elem_id="hires_upscale_tab_output_format")
                run = gr.Button("Upscale", variant="primary", elem_id="hires_upscale_tab_run")
            with gr.Column():
                gallery = gr.Gallery(label="Results", elem_id="hires_upscale_tab_gallery", columns=2)
                report = gr.HTML(elem_id="hires_upscale_tab_report")
        from modules.call_queue import wrap_gradio_gpu_call

        run.click(  # like the WebUI's own actions: the queue lock, the job state, errors shown in the page
            fn=wrap_gradio_gpu_call(functools.partial(_run_tab, session), extra_outputs=[[]]),
            inputs=[files, folder, output_folder, output_format, *(c[name] for name in TAB_FIELDS)],
            outputs=[gallery, report],
        )
        files.change(fn=_describe_dropped, inputs=[files],
                     outputs=[dropped, c["prompt"], c["negative_prompt"], overrides], show_progress=False)
    return [(tab, "Hires upscale", "hires_upscale_tab")]


def add_settings() -> None:
    """The "Hires upscale" section of the WebUI's settings."""
    from modules import shared

    def option(default: Any, label: str, component: Any = None, component_args: Any = None) -> Any:
        return shared.OptionInfo(default, label, component, component_args, section=("hires_upscale", "Hires upscale"))

    options = {
        "hires_upscale_default_upscaler": option(
            "", "Default upscaler (empty: the first model file our engine runs, else Lanczos)", gr.Dropdown,
            lambda: {"choices": ["", *upscaler_choices()]}),
        "hires_upscale_tile_size": option(
            0, "Upscaler tile size in pixels (0: chosen from free memory; --hires-upscale-tile-size overrides)",
            gr.Slider, {"minimum": 0, "maximum": 2048, "step": 32}),
        "hires_upscale_fp32": option(
            False, "Run upscaler models in fp32 (slower; only if fp16/bf16 output looks wrong)"),
        "hires_upscale_allowed_folders": option(
            "", "Folders the Hires upscale tab and API may read and write, one per line (the WebUI's output "
            "folders are always allowed)", gr.Textbox, {"lines": 3}),
        "hires_upscale_output_dir": option(
            "", "Output folder of the Hires upscale tab (empty: outputs/hires-upscale)"),
        "hires_upscale_serve_webui": option(
            False, "Serve the WebUI's own ESRGAN, Real-ESRGAN, SwinIR, HAT and DAT upscalers (Extras, built-in "
            "Hires fix, other extensions) with this extension's faster engine; falls back to the WebUI's code on "
            "any error"),
        carried.KEPT_OUT_OPTION: option(
            carried.DEFAULT_KEPT_OUT, "Extensions kept out of the second pass (script titles or extension folder "
            "names, comma-separated; the others run in it with the first pass's arguments, as in the built-in "
            "Hires fix)"),
        "hires_upscale_save_first_pass": option(
            False, "Also save each image before its hires upscale (suffix -before-hires-upscale)"),
    }
    for key, info in options.items():
        add_option(key, info)


def add_option(key: str, info: Any) -> None:
    from modules import shared

    shared.opts.add_option(key, info)
