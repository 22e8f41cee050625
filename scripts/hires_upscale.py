"""sd-webui-hires-upscale: the WebUI's entry point. Thin: the work is in hires_upscale/webui/."""

from modules import script_callbacks, scripts

from hires_upscale.webui import compat, service, ui
from hires_upscale.webui.api import build_router


class HiresUpscaleScript(scripts.Script):
    def title(self) -> str:
        return "Hires upscale"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        accordion = ui.AccordionUI(is_img2img)
        components = accordion.build()
        self.infotext_fields = accordion.infotext_fields()
        return components

    def process(self, p, *args) -> None:
        service.prepare(p, args)

    def postprocess_batch_list(self, p, pp, *args, **kwargs) -> None:
        service.postprocess_batch(p, pp.images)

    def postprocess_image(self, p, pp, *args) -> None:
        if not compat.HAS_AFTER_COMPOSITE:
            pp.image = service.postprocess(p, pp.image)

    def postprocess_image_after_composite(self, p, pp, *args) -> None:
        pp.image = service.postprocess(p, pp.image)

    def postprocess(self, p, processed, *args) -> None:
        service.finish(p)


def _register_routes(demo, app) -> None:
    # Like the WebUI's own API: the POST route only with --api (or --nowebui), behind --api-auth.
    router = build_router(service.WebUIApiHost(), include_upscale=compat.api_enabled(),
                          dependencies=compat.api_auth_dependencies())
    app.include_router(router)


compat.serve_host_upscalers(service.engine_upscale_native, service.serving_host_upscalers)
script_callbacks.on_app_started(_register_routes)
script_callbacks.on_ui_tabs(ui.build_tab)
script_callbacks.on_ui_settings(ui.add_settings)
