"""Validating a training configuration, with errors that name the field.

Example::

    config = parse_train_config({"epochs": 20, "augment": {"rotation_deg": 10}})
    parse_train_config({"epochs": 0})  # InvalidField: epochs: Input should be greater than or equal to 1
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from imaas.errors import InvalidField
from imaas.schemas.training import TrainConfig


def parse_train_config(data: dict[str, Any] | None, prefix: str = "") -> TrainConfig:
    """Validate a training configuration given as a mapping (JSON body, CLI options).

    Raises ``InvalidField`` whose detail names each offending field, after ``prefix``
    (``config.epochs: Input should be greater than or equal to 1`` with ``prefix="config."``),
    and whose ``errors`` extra lists them as ``{"field", "message"}``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidField(f"{prefix.rstrip('.') or 'config'}: must be a mapping (JSON object)")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "field": prefix + e["field"]} for e in map(_describe, exc.errors())]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidField(detail, errors=errors) from None


def _describe(error: Any) -> dict[str, str]:
    loc = [str(p) for p in error["loc"]]
    message = str(error["msg"])
    ctx = error.get("ctx") or {}
    if error["type"] == "cross_field":
        loc.append(str(ctx["field"]))
        message = message.removeprefix(f"{ctx['field']}: ")
    return {"field": ".".join(loc) or "(root)", "message": message}
