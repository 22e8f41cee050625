"""sd-webui-hires-upscale: the pure core (no WebUI, no Gradio).

Importing the package is cheap: torch and spandrel load only with the
`upscaler`, `tiling` and `pipeline` modules. The WebUI adapter lives in
`hires_upscale.webui` and is the only code that imports the WebUI's `modules`.
"""

__version__ = "0.1.0"
