"""The real-WebUI tier: one WebUI per test session, skipped with the reason when there is none."""

from __future__ import annotations

import pytest
from harness import WebUI, webui_root

ROOT, WHY_NOT = webui_root()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/webui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.webui)
            if ROOT is None:
                item.add_marker(pytest.mark.skip(reason=f"real-WebUI tests need a WebUI: {WHY_NOT}"))


@pytest.fixture(scope="session")
def webui(tmp_path_factory: pytest.TempPathFactory):
    server = WebUI(ROOT, tmp_path_factory.mktemp("webui"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
