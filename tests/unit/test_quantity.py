"""Tables for kubepy.meta.quantity: exact parsing and Kubernetes canonical form."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubepy.meta.quantity import (
    bytes_value,
    canonicalize_quantity,
    cpu_millis,
    format_quantity,
    parse_quantity,
    quantity_format,
)

# (input, exact value)
PARSE_CASES = [
    ("0", "0"),
    ("1", "1"),
    ("100m", "0.1"),
    ("250m", "0.25"),
    ("1.5", "1.5"),
    ("+1", "1"),
    ("-2", "-2"),
    ("1.", "1"),
    (".5", "0.5"),
    ("1n", "0.000000001"),
    ("1u", "0.000001"),
    ("12k", "12000"),
    ("1M", "1000000"),
    ("2G", "2000000000"),
    ("1T", "1e12"),
    ("1P", "1e15"),
    ("1E", "1e18"),
    ("1Ki", "1024"),
    ("1Mi", "1048576"),
    ("1.5Gi", "1610612736"),
    ("1Ti", str(2**40)),
    ("1Pi", str(2**50)),
    ("1Ei", str(2**60)),
    ("1e3", "1000"),
    ("1E3", "1000"),
    ("1e-3", "0.001"),
    ("1.5e+2", "150"),
    ("0.1n", "0.000000001"),  # below a nano-unit rounds up to 1n
    ("-0.1n", "-0.000000001"),  # ...away from zero
    ("1.0000000001", "1.000000001"),
    ("0.1", "0.1"),  # exact: no binary-float error
    (1, "1"),
    (1024, "1024"),
    (0.1, "0.1"),
    (2.5, "2.5"),
    (Decimal("0.25"), "0.25"),
]


@pytest.mark.parametrize("text,expected", PARSE_CASES)
def test_parse_quantity(text, expected):
    value = parse_quantity(text)
    assert isinstance(value, Decimal)
    assert value == Decimal(expected)


BAD_CASES = ["12Mx", "", "1.2.3", "--1", " 1", "1 ", "K", "1K", "1ki", "1e1.5", "e3", ".", "+", "1Mii",
             "1 Mi", "0x10", "1,5", "abc", "1e", "nan", "inf", float("nan"), float("inf"), True, None, [1]]


@pytest.mark.parametrize("text", BAD_CASES)
def test_parse_quantity_rejects_junk(text):
    with pytest.raises(ValueError) as err:
        parse_quantity(text)
    assert "invalid quantity" in str(err.value)
    assert repr(text) in str(err.value)


# (value, binary?, canonical) — Kubernetes' CanonicalizeString behaviour
FORMAT_CASES = [
    ("0", False, "0"),
    ("0.1", False, "100m"),
    ("0.0001", False, "100u"),
    ("0.000000001", False, "1n"),
    ("1", False, "1"),
    ("1.5", False, "1500m"),
    ("1.001", False, "1001m"),
    ("1500", False, "1500"),
    ("2000", False, "2k"),
    ("1200000", False, "1200k"),
    ("3000000000", False, "3G"),
    ("-0.5", False, "-500m"),
    ("-2000", False, "-2k"),
    ("1e21", False, "1000E"),
    (str(1024 * 1024), True, "1Mi"),
    ("1024", True, "1Ki"),
    ("1536", True, "1536"),  # not a whole number of Ki
    (str(1536 * 1024 * 1024), True, "1536Mi"),
    (str(2**60 * 3), True, "3Ei"),
    ("512", True, "512"),  # below 1024: decimal form, like Kubernetes
    ("0.5", True, "500m"),
    ("1153433.6", True, "1153433600m"),  # non-integral: decimal so nothing is lost
    ("-1024", True, "-1Ki"),
    ("0", True, "0"),
]


@pytest.mark.parametrize("value,binary,expected", FORMAT_CASES)
def test_format_quantity(value, binary, expected):
    assert format_quantity(Decimal(value), binary=binary) == expected


def test_format_quantity_exponent_form():
    assert format_quantity(Decimal(1000), exponent=True) == "1e3"
    assert format_quantity(Decimal("0.1"), exponent=True) == "100e-3"
    assert format_quantity(Decimal(1500), exponent=True) == "1500"


def test_format_quantity_accepts_int():
    assert format_quantity(4096, binary=True) == "4Ki"


# (input, canonical form the API server would store)
CANONICAL_CASES = [
    ("1000m", "1"),
    ("1001m", "1001m"),
    ("100m", "100m"),
    ("0.5", "500m"),
    ("1.2k", "1200"),
    ("12k", "12k"),
    ("1024Ki", "1Mi"),
    ("1.5Gi", "1536Mi"),
    ("0.5Ki", "512"),
    ("1.5Ki", "1536"),
    ("1023Ki", "1023Ki"),
    ("1.1Mi", "1153433600m"),
    ("5e3", "5e3"),
    ("1E6", "1e6"),
    ("1e-3", "1e-3"),
    ("100e-3", "100e-3"),
    ("12e2", "1200"),
    ("0.1n", "1n"),
    ("128974848", "128974848"),
    ("129e6", "129e6"),  # exponent form is kept, as in Kubernetes
    ("129M", "129M"),
    ("123Mi", "123Mi"),
    ("-1Ki", "-1Ki"),
    ("0Mi", "0"),
]


@pytest.mark.parametrize("text,expected", CANONICAL_CASES)
def test_canonicalize_quantity(text, expected):
    assert canonicalize_quantity(text) == expected
    # canonical form is a fixed point and means the same amount
    assert canonicalize_quantity(expected) == expected
    assert parse_quantity(expected) == parse_quantity(text)


FORMAT_KIND_CASES = [("1Ki", "BinarySI"), ("1k", "DecimalSI"), ("1", "DecimalSI"), ("1e3", "DecimalExponent"), (5, "DecimalSI")]


@pytest.mark.parametrize("text,expected", FORMAT_KIND_CASES)
def test_quantity_format(text, expected):
    assert quantity_format(text) == expected


CPU_CASES = [("1", 1000), ("100m", 100), ("0.1", 100), ("1.5", 1500), ("1n", 1), ("1500u", 2), ("2k", 2_000_000),
             (0.25, 250), (3, 3000), ("-100m", -100)]


@pytest.mark.parametrize("q,expected", CPU_CASES)
def test_cpu_millis(q, expected):
    assert cpu_millis(q) == expected


BYTES_CASES = [("1Ki", 1024), ("1Gi", 2**30), ("1.5", 2), ("100m", 1), ("128974848", 128974848), ("129M", 129_000_000),
               ("1e3", 1000), (512, 512), ("0", 0)]


@pytest.mark.parametrize("q,expected", BYTES_CASES)
def test_bytes_value(q, expected):
    assert bytes_value(q) == expected
