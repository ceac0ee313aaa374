"""Authorisation: what a caller's key lets it do, and which models exist for it.

Every edge (both REST predict paths, the REST routes, OIP REST and gRPC) and every service
that acts for a caller asks here. A key limited to some models (tenancy) sees no other:
naming one is ``ModelNotFound`` with the same words as a model that does not exist, and
listings leave them out, so a probe cannot tell "not mine" from "absent".

Example::

    authorize(principal, Scope.INFER)       # InsufficientScope (403) without it
    check_model(principal, "team-b-cats")   # ModelNotFound (404) for a key limited to team-a-*
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from imaas.domain import Principal, Scope
from imaas.errors import InsufficientScope, ModelForbidden, ModelNotFound


class Named(Protocol):
    """Anything with a model name (records, versions)."""

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def authorize(principal: Principal, *scopes: Scope) -> None:
    """Pass when the key holds one of ``scopes``; ``InsufficientScope`` naming them otherwise."""
    for scope in scopes:
        if scope in principal.scopes:
            return
    wanted = " or ".join(repr(s.value) for s in scopes)
    raise InsufficientScope(f"this API key lacks the scope {wanted}")


def not_found(name: str) -> ModelNotFound:
    """The one error for a model that is absent or invisible to the caller (the registry's words)."""
    return ModelNotFound(f"no model named {name!r}")


def model_of(ref: str) -> str:
    """The model a reference names: ``name``, ``name@3`` and ``name:alias`` all name ``name``
    (the check must see the name the lookup will use, never the raw text)."""
    return ref.split("@", 1)[0].split(":", 1)[0]


def check_model(principal: Principal, ref: str) -> None:
    """Pass when the model ``ref`` names is visible to the key; ``ModelNotFound`` as if absent otherwise."""
    name = model_of(ref)
    if not principal.sees(name):
        raise not_found(name)


def check_new_model(principal: Principal, ref: str) -> None:
    """Pass when the key may create or write ``name`` (a push may name a model that does not
    exist yet): ``ModelForbidden`` (403, the same whether or not it exists) otherwise."""
    if not principal.sees(model_of(ref)):
        raise ModelForbidden(f"this API key may only use the models {', '.join(principal.models or ())}")


def visible(principal: Principal, items: Iterable[N]) -> Iterator[N]:
    """The items whose model the key sees, in order."""
    if principal.models is None:
        yield from items
        return
    for item in items:
        if principal.sees(item.name):
            yield item
