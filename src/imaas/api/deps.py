"""Request dependencies: the services of the app and the caller's identity.

The ``Authenticate`` middleware (``api/auth.py``) puts the caller's ``Principal`` in the
request's scope state before any route runs, on both predict paths alike; ``principal``
reads it back and ``require(...)`` adds the scope a route needs, so every route names what
it requires in one place (and the OpenAPI description says it).

Example::

    @router.get("/v1/models")
    async def list_models(p: Principal = Depends(require(Scope.MODELS_READ))) -> ...: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.requests import HTTPConnection

from imaas.domain import Principal, Scope
from imaas.errors import InsufficientScope, MissingCredentials
from imaas.services.access import authorize, check_model, check_new_model
from imaas.services.container import Services

__all__ = ["Principal", "principal", "require", "services"]


async def services(request: Request) -> Services:
    """The ``Services`` the app was built with (async: a sync dependency costs a thread hop)."""
    svc: Services = request.app.state.services
    return svc


def principal_of(conn: HTTPConnection) -> Principal:
    """The caller the ``Authenticate`` middleware found (``MissingCredentials`` on a public path)."""
    p = conn.scope.get("state", {}).get("principal")
    if p is None:
        raise MissingCredentials("send 'Authorization: Bearer <API key>'")
    assert isinstance(p, Principal)
    return p


async def principal(request: Request) -> Principal:
    """The authenticated caller of this request."""
    return principal_of(request)


def require(
    *scopes: Scope, new_model: bool = False, unrestricted: bool = False
) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, once it holds one of ``scopes`` (else ``InsufficientScope``, 403)
    and sees the model the path names (``{name}`` or ``{model}``): a model outside a limited
    key's list is ``ModelNotFound`` as if absent, or ``ModelForbidden`` where the route may
    create it (``new_model``: a push). ``unrestricted``: only a key not limited to models
    (key management and the audit log span every tenant)."""

    async def dependency(request: Request) -> Principal:
        p = principal_of(request)
        authorize(p, *scopes)
        if unrestricted and not p.unrestricted:
            raise InsufficientScope("managing keys and reading the audit log need a key not limited to models")
        if p.models is not None:
            params = request.path_params
            name = params.get("name") or params.get("model")
            if isinstance(name, str):
                (check_new_model if new_model else check_model)(p, name)
        return p

    dependency.__name__ = "require_" + "_or_".join(s.value.replace(":", "_") for s in scopes)
    return dependency


READ = require(Scope.MODELS_READ)
WRITE = require(Scope.MODELS_WRITE)
PUSH = require(Scope.MODELS_WRITE, new_model=True)
INFER = require(Scope.INFER)
DESCRIBE = require(Scope.INFER, Scope.MODELS_READ)  # what a client reads before inferring
KEYS_ADMIN = require(Scope.KEYS_ADMIN, unrestricted=True)
JOBS = require(Scope.JOBS)
DATASETS_READ = require(Scope.DATASETS_READ)
DATASETS_WRITE = require(Scope.DATASETS_WRITE)
COLLECTIONS_READ = require(Scope.COLLECTIONS_READ)
COLLECTIONS_WRITE = require(Scope.COLLECTIONS_WRITE)
