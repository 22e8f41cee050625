"""install.py, which the WebUI runs at start: it adds spandrel where the WebUI lacks it (v1.6, v1.7)
without letting pip touch torch. Wiring on a stand-in `launch` module; a real v1.6.0 WebUI gets spandrel
this way in tests/webui (the harness runs the WebUI's own extension installer)."""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / "install.py"


@pytest.mark.parametrize("has_spandrel", [False, True])
def test_spandrel_is_added_only_where_missing_and_without_its_dependencies(monkeypatch, has_spandrel):
    calls: list[tuple[str, str]] = []
    launch = types.SimpleNamespace(is_installed=lambda name: has_spandrel if name == "spandrel" else True,
                                   run_pip=lambda command, desc: calls.append((command, desc)))
    monkeypatch.setitem(sys.modules, "launch", launch)
    runpy.run_path(str(INSTALL))
    if has_spandrel:
        assert calls == []
    else:
        [(command, desc)] = calls
        assert command == "install --no-deps spandrel==0.3.4" and "sd-webui-hires-upscale" in desc
