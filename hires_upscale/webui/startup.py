"""What the extension registers with the WebUI at start, each part on its own.

A part that fails (a route FastAPI cannot add, a callback that raises) is said in the console:
what failed, what no longer works because of it, and what to do; the other parts are added and
work as usual. The WebUI's own callback runner would report the error too, but it stops at the
first failing step of a callback and says nothing of what it cost the user.

Printed to stderr, as the WebUI prints its own start-up errors: the hosts configure no logging
handler, and a logger's message may then go nowhere a user looks.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

Action = TypeVar("Action", bound=Callable[..., Any])

#: What a user can do about a failure of ours at start.
REMEDY = ("The rest of sd-webui-hires-upscale still works. To fix it: update the extension (git pull in "
          "its folder) and restart; if it stays, report it with the traceback below and the WebUI's "
          "version line (at the bottom of its page).")


def _report(what: str, lost: str) -> None:
    """Say the error being handled, in the WebUI's own "*** " style."""
    details = traceback.format_exc().rstrip().replace("\n", "\n    ")
    print(f"*** sd-webui-hires-upscale: {what} failed, so {lost}. {REMEDY}\n    {details}", file=sys.stderr,
          flush=True)


def attempt(what: str, lost: str, action: Callable[[], Any]) -> bool:
    """Run `action`; on any error, say what failed and what it costs (`lost`), and return False."""
    try:
        action()
    except Exception:
        _report(what, lost)
        return False
    return True


def guarded(what: str, lost: str) -> Callable[[Action], Action]:
    """A callback for the WebUI that never raises into it: a failure is said as `attempt` says it."""

    def decorate(callback: Action) -> Action:
        @functools.wraps(callback)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception:
                _report(what, lost)
                return None

        return run  # type: ignore[return-value]

    return decorate


def add_routes(app: Any, routers: dict[str, Callable[[], Any]]) -> list[str]:
    """Each route on the app on its own (`api.routers`); the names of those that were added."""
    added = []
    for name, build in routers.items():
        if attempt(f"adding the route {name}", f"{name} answers 404",
                   lambda build=build: app.include_router(build())):
            added.append(name)
    return added
