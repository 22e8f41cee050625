"""The core must stay importable without the WebUI (the adapter is the only user of `modules`)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import hires_upscale

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_nothing_from_the_webui():
    names = [m.name for m in pkgutil.iter_modules(hires_upscale.__path__, "hires_upscale.")
             if m.name not in ("hires_upscale.webui", "hires_upscale.__main__")]
    assert "hires_upscale.upscaler" in names and "hires_upscale.pipeline" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'modules' or m.startswith('modules.') or m.startswith('gradio')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_importing_the_package_is_cheap():
    # the tiling policy (memory) is plain arithmetic: the script, the service and the UI import it
    code = ("import sys, hires_upscale.params, hires_upscale.plan, hires_upscale.memory; "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
