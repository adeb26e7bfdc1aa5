"""The orjson renderer writes what DRF's JSONRenderer writes, or the same JSON values."""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from botai.renderers import FastJSONRenderer

MEDIA = "application/json"


@dataclass
class Point:
    x: int


def both(data, media=MEDIA, context=None) -> tuple[bytes, bytes]:
    """What FastJSONRenderer and DRF's JSONRenderer make of the same data."""
    return tuple(
        renderer().render(data, media, context) for renderer in (FastJSONRenderer, JSONRenderer)
    )


def test_the_api_shapes_come_out_byte_for_byte():
    row = {
        "id": 7, "symbol": "BTCUSDT", "close": 97123.5, "confidence": 0.30000000000000004,
        "returns": {"1": 0.0012, "4": -0.25}, "probabilities": {"1": [0.2, 0.3, 0.5]},
        "ok": True, "none": None, "big": 2**63 - 1, "text": "ünïcode \"quoted\" \\ <&>",
    }  # fmt: skip
    page = {
        "next": "http://testserver/api/v1/ml/predictions/BTCUSDT?cursor=cD0yMDI1",
        "previous": None,
        "results": ReturnList([ReturnDict(row, serializer=None)], serializer=None),
    }
    ours, drf = both(page)
    assert ours == drf


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, 12, 30, tzinfo=UTC),  # ...Z
        datetime(2025, 1, 1, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2025, 1, 1, 12, 30),
        date(2025, 1, 1),
        time(12, 30, 1),
        timedelta(minutes=90),
        Decimal("1.10"),
        uuid.UUID(int=5),
        gettext_lazy("lazy text"),
        {1: "int key", 2.5: "float key", None: "null key"},
        {True: "bool key"},
        (1, 2),
        {3},
        np.float32(0.5),
        np.arange(3),
        "line\u2028separator\u2029paragraph",
        2**70,  # beyond 64 bits: DRF's path
    ],
)
def test_other_values_are_spelled_as_drf_spells_them(value):
    ours, drf = both({"value": value})
    assert ours == drf


def test_tiny_floats_are_the_same_numbers_in_plain_notation():
    values = [1.234e-05, -1e-07, 5e-324, 1e-4 / 3]
    ours, drf = both(values)
    assert ours != drf  # 0.00001234 vs 1.234e-05
    assert json.loads(ours) == json.loads(drf) == values


def test_nan_is_null_where_the_standard_library_refused():
    assert FastJSONRenderer().render({"x": float("nan")}) == b'{"x":null}'
    with pytest.raises(ValueError, match="JSON compliant"):
        JSONRenderer().render({"x": float("nan")})


def test_indented_output_and_nothing_take_drfs_path():
    ours, drf = both({"a": [1, 2]}, f"{MEDIA}; indent=4")
    assert ours == drf
    assert b"\n    " in ours
    ours, drf = both({"a": 1}, MEDIA, {"indent": 2})
    assert ours == drf
    assert FastJSONRenderer().render(None) == b""


@pytest.mark.parametrize("value", [object(), Point(3)])
def test_what_drf_cannot_encode_still_fails(value):
    with pytest.raises(TypeError):
        JSONRenderer().render({"x": value})
    with pytest.raises(TypeError):
        FastJSONRenderer().render({"x": value})
