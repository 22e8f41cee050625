"""sd-webui-hires-upscale: the WebUI's entry point. Thin: the work is in hires_upscale/webui/."""

import functools

from modules import script_callbacks, scripts, shared

from hires_upscale.webui import compat, hosts, service, startup, ui, upscalers
from hires_upscale.webui.api import routers
from hires_upscale.webui.auth import basic_auth_dependencies
from hires_upscale.webui.backend import Session

#: This WebUI (detected once) and when its second passes run tiled (the sizes that ran out of memory
#: are remembered): one for the session, shared by txt2img, img2img, the tab and the API.
SESSION = Session(hosts.detect())


class HiresUpscaleScript(scripts.Script):
    def title(self) -> str:
        return "Hires upscale"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        accordion = ui.AccordionUI(is_img2img, SESSION)
        components = accordion.build()
        self.infotext_fields = accordion.infotext_fields()
        startup.attempt("adding the Hires upscale button under the gallery", "it is missing",
                        lambda: ui.GalleryButton(accordion, SESSION).hook(self))
        return components

    def process(self, p, *args) -> None:
        service.prepare(p, args, SESSION)

    def postprocess_batch_list(self, p, pp, *args, **kwargs) -> None:
        service.postprocess_batch(p, pp.images, SESSION)

    def postprocess_image(self, p, pp, *args) -> None:
        if not compat.HAS_AFTER_COMPOSITE:
            pp.image = service.postprocess(p, pp.image, SESSION)

    def postprocess_image_after_composite(self, p, pp, *args) -> None:
        pp.image = service.postprocess(p, pp.image, SESSION)

    def postprocess(self, p, processed, *args) -> None:
        service.finish(p, SESSION)


@startup.guarded("adding the routes under /hires-upscale/v1/", "they answer 404")
def _add_routes(demo, app) -> None:
    # Like the WebUI's own API: only with --api (or --nowebui), every route behind --api-auth. The page
    # needs none of them (its data comes with the page: ui.page_options_box).
    flags = shared.cmd_opts
    if getattr(flags, "api", False) or getattr(flags, "nowebui", False):
        startup.add_routes(app, routers(service.WebUIApiHost(SESSION),
                                        basic_auth_dependencies(getattr(flags, "api_auth", None))))


_serve_host_upscalers = startup.guarded(
    "serving the WebUI's own upscalers with this extension's engine",
    "they run the WebUI's own code (setting \"Serve the WebUI's own ... upscalers\")")(upscalers.serve_host_upscalers)
_serve_host_upscalers()
# again once every script has loaded: a built-in extension's upscaler class (SwinIR's) may load later
script_callbacks.on_app_started(lambda *_: _serve_host_upscalers())
script_callbacks.on_app_started(_add_routes)
script_callbacks.on_ui_tabs(startup.guarded("building the Hires upscale tab", "the tab is missing")(
    functools.partial(ui.build_tab, SESSION)))
script_callbacks.on_ui_settings(startup.guarded("adding the Hires upscale settings",
                                                "some of its settings are missing")(ui.add_settings))
