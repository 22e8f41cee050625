"""sd-webui-hires-upscale: the WebUI's entry point. Thin: the work is in hires_upscale/webui/."""

import functools

from modules import script_callbacks, scripts

from hires_upscale.lowvram import TilingPolicy
from hires_upscale.webui import compat, service, ui, upscalers
from hires_upscale.webui.api import build_router
from hires_upscale.webui.auth import basic_auth_dependencies

#: When second passes run tiled, and the sizes that ran out of memory: one for this WebUI session,
#: shared by txt2img, img2img, the tab and the API.
TILING = TilingPolicy()


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
        service.postprocess_batch(p, pp.images, TILING)

    def postprocess_image(self, p, pp, *args) -> None:
        if not compat.HAS_AFTER_COMPOSITE:
            pp.image = service.postprocess(p, pp.image, TILING)

    def postprocess_image_after_composite(self, p, pp, *args) -> None:
        pp.image = service.postprocess(p, pp.image, TILING)

    def postprocess(self, p, processed, *args) -> None:
        service.finish(p)


def _register_routes(demo, app) -> None:
    # Like the WebUI's own API: the POST route only with --api (or --nowebui), behind --api-auth.
    router = build_router(service.WebUIApiHost(TILING), include_upscale=compat.api_enabled(),
                          dependencies=basic_auth_dependencies(compat.cmd_option("api_auth")))
    app.include_router(router)


upscalers.serve_host_upscalers()
# again once every script has loaded: a built-in extension's upscaler class (SwinIR's) may load later
script_callbacks.on_app_started(lambda *_: upscalers.serve_host_upscalers())
script_callbacks.on_app_started(_register_routes)
script_callbacks.on_ui_tabs(functools.partial(ui.build_tab, TILING))
script_callbacks.on_ui_settings(ui.add_settings)
