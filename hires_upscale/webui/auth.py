"""The HTTP basic authentication of the WebUI's own API (--api-auth), for our upscale route."""

from __future__ import annotations

from secrets import compare_digest
from typing import Any


def basic_auth_dependencies(setting: str | None) -> list[Any]:
    """FastAPI dependencies that accept the users of an --api-auth value ("user:password,user2:pw2");
    none when the WebUI runs its API without authentication."""
    if not setting:
        return []
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    users = dict(entry.split(":", 1) for entry in setting.split(",") if ":" in entry)

    def check(credentials: HTTPBasicCredentials = Depends(HTTPBasic())) -> None:  # noqa: B008 - FastAPI idiom
        if credentials.username in users and compare_digest(credentials.password, users[credentials.username]):
            return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]
