"""sd-webui-hires-upscale: the WebUI's entry point. Thin: the work is in hires_upscale/webui/."""

from modules import script_callbacks, scripts

from hires_upscale.webui import compat, service, ui
from hires_upscale.webui.api import build_router


class HiresUpscaleScript(scripts.Script):
    def __init__(self) -> None:
        super().__init__()
        self.first_pass: dict = {}

    def title(self) -> str:
        return "Hires upscale"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs) -> None:
        # The tab's own size and steps, for the size preview and advice in the accordion.
        elem_id = kwargs.get("elem_id") or ""
        for tab in ("txt2img", "img2img"):
            for name in ("width", "height", "steps"):
                if elem_id == f"{tab}_{name}":
                    self.first_pass[(tab, name)] = component

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        accordion = ui.AccordionUI(is_img2img, {name: c for (t, name), c in self.first_pass.items() if t == tab})
        components = accordion.build()
        self.infotext_fields = accordion.infotext_fields()
        self.paste_field_names = ui.paste_field_names()
        return components

    def process(self, p, *args) -> None:
        service.prepare(p, args)

    def postprocess_image(self, p, pp, *args) -> None:
        if not compat.HAS_AFTER_COMPOSITE:
            pp.image = service.postprocess(p, pp.image)

    def postprocess_image_after_composite(self, p, pp, *args) -> None:
        pp.image = service.postprocess(p, pp.image)


def _register_routes(demo, app) -> None:
    app.include_router(build_router(service.WebUIApiHost()))


compat.serve_host_upscalers(service.engine_upscale_native, service.serving_host_upscalers)
script_callbacks.on_app_started(_register_routes)
script_callbacks.on_ui_tabs(ui.build_tab)
script_callbacks.on_ui_settings(ui.add_settings)
