"""schemathesis hooks for tests/e2e/test_openapi_contract.py: the rules OpenAPI cannot state,
and the one call the run must not make.

Loaded by the ``st`` process through ``SCHEMATHESIS_HOOKS``. Each ``filter_failure`` rule
drops one kind of ``positive_data_acceptance`` failure, and only when the response is the
documented answer to that rule; every other failure is kept. ``before_call`` keeps the run
from revoking or rotating the very key it authenticates with (the test passes its id and a
decoy's in ``IMAAS_CONTRACT_KEY_ID`` and ``IMAAS_CONTRACT_DECOY_KEY_ID``).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData, UseAfterFree

PREDICT = "/v1/models/{name}:predict"
# Calls that end a key: after one on the run's own key every later request would be a 401.
ENDS_A_KEY = {("DELETE", "/v1/keys/{key_id}"), ("POST", "/v1/keys/{key_id}/rotate")}


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    """Send a revoke or rotate of the run's own key to the decoy admin key instead.

    The stateful phase finds the key's id (``GET /v1/keys``) and would revoke or rotate it
    (a rotation revokes it at once without a grace period); the decoy takes those calls, so
    the operations are still exercised on a real admin key and the run keeps its own.
    """
    own, decoy = os.environ.get("IMAAS_CONTRACT_KEY_ID"), os.environ.get("IMAAS_CONTRACT_DECOY_KEY_ID")
    params = case.path_parameters
    ends_a_key = (case.method.upper(), case.operation.path) in ENDS_A_KEY
    if own and decoy and params and ends_a_key and unquote(str(params.get("key_id", ""))) == own:
        params["key_id"] = decoy


# The registry's state decides these 422s, not the request: a canary or shadow equal to the
# version the alias serves, or a shadow of a model of another task (issue 9 asks for 422
# naming the field). Matched on their wording, so any other 422 is still a failure.
STATE_DEPENDENT_422 = re.compile(r"must be another version|must be an? \w+ model$")


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a documented 400 for a request valid parameter by parameter,
    a 422 ``invalid_field`` that depends on what the alias serves now, and a revoked key that
    is still shown (``DELETE /v1/keys/{key_id}`` revokes: the record stays, marked revoked,
    for the audit log and the usage it is billed on)."""
    if isinstance(failure, UseAfterFree):
        body = _json(response)
        revoked = isinstance(body, dict) and body.get("revoked_at") is not None
        return not (case.operation.path == "/v1/keys/{key_id}" and response.status_code == 200 and revoked)
    if not isinstance(failure, RejectedPositiveData):
        return True
    if response.status_code == 422:
        body = _json(response)
        detail = body.get("detail", "") if isinstance(body, dict) and body.get("code") == "invalid_field" else ""
        return not STATE_DEPENDENT_422.search(str(detail))
    if response.status_code != 400:
        return True
    if case.operation.path == PREDICT and conflicting_reference(case.path_parameters or {}, case.query or {}):
        return False
    return not (case.operation.path.endswith("/ready") and _json(response) == {"ready": False})


def conflicting_reference(path: dict[str, Any], query: dict[str, Any]) -> bool:
    """Whether a predict call names a version and an alias, or two versions or aliases that differ.

    OpenAPI has no way to say that ``name@3``, ``name:staging``, ``?version=`` and ``?alias=``
    exclude each other, so a request combining them is schema-valid and still answered 400
    ``invalid_request`` ("give a version or an alias, not both").
    """
    name = unquote(str(path.get("name", "")))  # schemathesis percent-encodes path values in place
    versions: set[str] = set()
    aliases: set[str] = set()
    if "@" in name:
        versions.add(_number(name.partition("@")[2]))
    elif ":" in name:
        aliases.add(name.partition(":")[2])
    version, alias = _last(query.get("version")), _last(query.get("alias"))
    if version is not None:
        versions.add(_number(str(version)))
    if alias is not None:
        aliases.add(str(alias))
    return bool(versions and aliases) or len(versions) > 1 or len(aliases) > 1


def _number(text: str) -> str:
    """A version as the server compares it: ``"01"`` and ``"1"`` are the same."""
    return str(int(text)) if text.isdecimal() else text


def _last(value: Any) -> Any:
    """The value the server reads for a query parameter sent several times: the last one."""
    return value[-1] if isinstance(value, list) and value else value


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
