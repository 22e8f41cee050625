"""Run by the WebUI at start: add what the extension needs without touching torch.

WebUI v1.8+ and Forge ship spandrel; older WebUIs (v1.6, v1.7) do not. We add the
version WebUI v1.10 pins, with --no-deps so pip cannot pull another torch.
"""

import launch

SPANDREL = "spandrel==0.3.4"

if not launch.is_installed("spandrel"):
    launch.run_pip(f"install --no-deps {SPANDREL}", f"{SPANDREL} for sd-webui-hires-upscale")
