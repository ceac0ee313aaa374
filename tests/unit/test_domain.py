"""Model references and the error tree."""

from __future__ import annotations

import pytest

from imaas.domain import ModelRef
from imaas.errors import ImaasError, InvalidRequest, ModelNotFound, Overloaded, error_for_code


def test_parse_forms() -> None:
    assert ModelRef.parse("m") == ModelRef("m")
    assert ModelRef.parse("m@3") == ModelRef("m", version=3)
    assert ModelRef.parse("m:staging") == ModelRef("m", alias="staging")
    assert ModelRef.parse("m", version=2) == ModelRef("m", version=2)
    assert str(ModelRef.parse("m@3")) == "m@3"


@pytest.mark.parametrize("text", ["M", "", "a/b", "m@x", "m@0", "m:Bad!", "../etc"])
def test_bad_references(text: str) -> None:
    with pytest.raises(InvalidRequest):
        ModelRef.parse(text)


def test_version_and_alias_together() -> None:
    with pytest.raises(InvalidRequest):
        ModelRef.parse("m@2", alias="production")


def test_codes_map_back_to_classes() -> None:
    assert error_for_code("model_not_found") is ModelNotFound
    assert error_for_code("overloaded") is Overloaded
    assert error_for_code("no_such_code") is ImaasError
    codes = [c.code for c in [ModelNotFound, Overloaded, InvalidRequest]]
    assert len(set(codes)) == len(codes)
