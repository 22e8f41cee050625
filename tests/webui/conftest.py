"""The real-WebUI tier: one WebUI per host found (A1111, Forge, Forge Neo; reForge when asked for), one
at a time.

The `webui` fixture is parametrized over the hosts (test ids "a1111", "forge", "forge-neo",
"reforge"); a host whose checkout or venv is missing skips its tests with the reason. Tests are
ordered by host, so pytest stops the first host's WebUI before it starts the next
(this machine has room for one). On a smoke-only host (Forge Neo) only the tests marked `smoke`
run unless HIRES_UPSCALE_ALL_TESTS=1: CI's time has no room for a third whole tier.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import WebUI, find_checkouts

#: tests/conftest.py's switch for the opt-in tests (not imported: "conftest" may name this file here)
ALL_TESTS = "HIRES_UPSCALE_ALL_TESTS"

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
        # SDXL (and Flux) last: its full-size weights (13 GB in fp32 on the CPU) leave the WebUI's memory high
        # after it switches back, and the tests after it, with their own references, then met the
        # out-of-memory killer on this 23 GB machine. Last, the WebUI is stopped right after.
        return order.get(kind, -1), Path(str(item.fspath)).name in ("test_sdxl.py", "test_flux.py")

    items.sort(key=host_of)  # stable: the order within a host stays as collected
    if os.environ.get(ALL_TESTS) == "1":
        return
    smoke_only = {host.kind: host.title for host, _, _ in CHECKOUTS if host.smoke_only}
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("webui") if callspec is not None else None
        if kind in smoke_only and item.get_closest_marker("smoke") is None:
            item.add_marker(pytest.mark.skip(reason=f"opt-in ({ALL_TESTS}=1): on {smoke_only[kind]} only the smoke "
                                                    "tests run by default; its whole tier would take CI past its time"))


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
