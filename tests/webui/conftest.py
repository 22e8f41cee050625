"""The real-WebUI tier: one WebUI per host found (A1111, Forge; reForge when asked for), one at a time.

The `webui` fixture is parametrized over the hosts (test ids "a1111", "forge", "reforge");
a host whose checkout or venv is missing skips its tests with the reason. Tests are
ordered by host, so pytest stops the first host's WebUI before it starts the next
(this machine has room for one).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import WebUI, find_checkouts

CHECKOUTS = find_checkouts()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/webui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.webui)
    # All tests of one host, then all of the next: a session fixture's instance is torn down when
    # its param changes, so this keeps one WebUI running at a time. (pytest already groups by a
    # session-scoped param; the sort makes it so whatever other plugins reorder.)
    order = {host.kind: n for n, (host, _, _) in enumerate(CHECKOUTS)}

    def host_of(item) -> tuple[int, bool]:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("webui") if callspec is not None else None
        # SDXL last: its full-size weights (13 GB in fp32 on the CPU) leave the WebUI's memory high
        # after it switches back, and the tests after it, with their own references, then met the
        # out-of-memory killer on this 23 GB machine. Last, the WebUI is stopped right after.
        return order.get(kind, -1), Path(str(item.fspath)).name == "test_sdxl.py"

    items.sort(key=host_of)  # stable: the order within a host stays as collected


@pytest.fixture(scope="session", params=[host.kind for host, _, _ in CHECKOUTS])
def webui(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    host, checkout, why_not = next(entry for entry in CHECKOUTS if entry[0].kind == request.param)
    if checkout is None:
        pytest.skip(f"real-WebUI tests on {host.title} need its checkout: {why_not}")
    server = WebUI(checkout, tmp_path_factory.mktemp(f"webui-{host.kind}"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
