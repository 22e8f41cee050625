"""The WebUI adapter: the only code that imports the WebUI's `modules`.

`compat` holds every version difference; `backend` implements the core's
Backend with the WebUI's img2img; `service` holds the use cases shared by the
script (`scripts/hires_upscale.py`), the tab (`ui`) and the HTTP routes (`api`).
Nothing is imported here, so `api` stays importable without the WebUI.
"""
