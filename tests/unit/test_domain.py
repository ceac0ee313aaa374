"""Model references and the error tree."""

from __future__ import annotations

import pytest

from imaas import errors
from imaas.domain import ModelRef, parse_decimal
from imaas.errors import (
    ImaasError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    all_error_classes,
    error_for_code,
)


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


def test_every_error_class_has_its_own_code_and_maps_back_to_itself() -> None:
    declared = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, ImaasError) and obj.__module__ == errors.__name__
    ]
    assert len(declared) >= 20
    assert set(all_error_classes()) == set(declared)  # the walk finds every class the module defines
    codes = [cls.code for cls in declared]
    assert len(set(codes)) == len(codes), sorted(c for c in codes if codes.count(c) > 1)
    for cls in declared:
        assert error_for_code(cls.code) is cls
        assert 400 <= cls.status <= 599
        assert cls.title
        assert cls.__doc__


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("9" * 18, 10**18 - 1),
        ("\u00b2", None),
        ("\u0663", None),
        ("", None),
        ("1" * 19, None),
        ("9" * 5000, None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("1_0", None),
    ],
)
def test_parse_decimal_takes_plain_ascii_digits_only(text: str, value: int | None) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize("text", ["m@\u00b2", "m@\u0663", "m@" + "9" * 5000])
def test_unicode_and_endless_digits_are_a_bad_version_not_a_crash(text: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid version"):
        ModelRef.parse(text)
