"""The HTTP basic authentication of the WebUI's own API (--api-auth), for our routes.

No `from __future__ import annotations` here: FastAPI 0.94 with pydantic 1 (A1111) resolves a
dependency's string annotations in its module's globals, so the credentials type must be a real
class at module level (as a string it failed with NameError and took every route down).
"""

from secrets import compare_digest
from typing import Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials


def api_users(setting: str | None) -> dict[str, str]:
    """The users of an --api-auth value ("user:password,user2:pw2"). A second ':' stays in the password
    (A1111's own API fails to start on one; nothing is gained by failing here too)."""
    return dict(entry.split(":", 1) for entry in (setting or "").split(",") if ":" in entry)


def basic_auth_dependencies(setting: str | None) -> list[Any]:
    """FastAPI dependencies that accept the users of an --api-auth value, answering like the WebUI's
    own API otherwise (401 with `WWW-Authenticate: Basic`); none when the API runs without it."""
    if not setting:
        return []
    users = api_users(setting)

    def check(credentials: HTTPBasicCredentials = Depends(HTTPBasic())) -> None:  # noqa: B008 - FastAPI idiom
        known = users.get(credentials.username)
        if known is not None and compare_digest(credentials.password.encode(), known.encode()):
            return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]
