"""Request dependencies: the services of the app and the caller's identity.

``principal`` is the authentication seam: today every caller is anonymous; the API-key
issue replaces its body, and every route already depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from imaas.services.container import Services


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do."""

    name: str = "anonymous"
    scopes: frozenset[str] = frozenset({"*"})


ANONYMOUS = Principal()


async def services(request: Request) -> Services:
    """The ``Services`` the app was built with (async: a sync dependency costs a thread hop)."""
    svc: Services = request.app.state.services
    return svc


async def principal(request: Request) -> Principal:
    """The caller (authentication lands here in a later issue)."""
    return ANONYMOUS
