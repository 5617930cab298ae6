"""Kubernetes ``resource.Quantity``: exact parsing and canonical formatting.

Quantities such as ``100m``, ``1.5Gi`` or ``5e3`` appear in resource requests
and limits, node capacity and quota.  The API server stores them in canonical
form and the scheduler and kubelet compare them, so parsing must be exact:
values are ``decimal.Decimal`` and floats never enter the arithmetic.

Grammar (as documented by Kubernetes)::

    quantity  ::= sign? number suffix
    number    ::= digits | digits "." digits? | "." digits
    suffix    ::= binarySI | decimalSI | ("e" | "E") sign? digits
    binarySI  ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI ::= n | u | m | "" | k | M | G | T | P | E

Like Kubernetes, a non-zero value finer than one nano-unit is rounded away from
zero to the nearest ``1n`` ("if you ask for some resource you get some").
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_UP, Decimal, InvalidOperation, localcontext
from typing import Literal

__all__ = [
    "parse_quantity",
    "quantity_format",
    "format_quantity",
    "canonicalize_quantity",
    "cpu_millis",
    "bytes_value",
]

QuantityFormat = Literal["BinarySI", "DecimalSI", "DecimalExponent"]

_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXPONENT = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER = {power // 10: suffix for suffix, power in _BINARY_SUFFIXES.items()}

# The whole token must match: Kubernetes rejects surrounding whitespace too.
_QUANTITY_RE = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?))"
)

_NANO = Decimal("1e-9")
_SUFFIX_HELP = "n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3"

QuantityInput = str | int | float | Decimal


def _split(text: str) -> tuple[Decimal, QuantityFormat]:
    """Parse *text* into its exact value and the format its suffix implies."""
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        if text == "":
            raise ValueError("invalid quantity '': a quantity must not be empty")
        raise ValueError(
            f"invalid quantity {text!r}: expected a number with an optional suffix ({_SUFFIX_HELP})"
        )
    number = Decimal(match["number"])
    if match["exp"] is not None:
        # scaleb is exact; a huge exponent would otherwise build a giant integer.
        exponent = int(match["exp"][1:])
        if abs(exponent) > 100:
            raise ValueError(f"invalid quantity {text!r}: exponent out of range")
        return number.scaleb(exponent), "DecimalExponent"
    suffix = match["suffix"]
    if suffix in _BINARY_SUFFIXES:
        return number * (2 ** _BINARY_SUFFIXES[suffix]), "BinarySI"
    return number.scaleb(_DECIMAL_SUFFIXES[suffix]), "DecimalSI"


def _round_nano(value: Decimal) -> Decimal:
    """Round away from zero to 1e-9, as Kubernetes does on parse."""
    if value.as_tuple().exponent >= -9:  # type: ignore[operator]
        return value  # already a whole number of nano-units; keep its exact form
    return value.quantize(_NANO, rounding=ROUND_UP)


def _to_decimal(value: QuantityInput) -> tuple[Decimal, QuantityFormat]:
    if isinstance(value, bool):
        # bool is an int subclass; True as "1" is almost certainly a bug upstream.
        raise ValueError(f"invalid quantity {value!r}: booleans are not quantities")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"invalid quantity {value!r}: must be finite")
        return value, "DecimalSI"
    if isinstance(value, int):
        return Decimal(value), "DecimalSI"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"invalid quantity {value!r}: must be finite")
        # repr() is the shortest string that round-trips, so 0.1 means 0.1, not
        # the binary approximation 0.1000000000000000055...
        return Decimal(repr(value)), "DecimalSI"
    if isinstance(value, str):
        return _split(value)
    raise ValueError(f"invalid quantity {value!r}: expected a string or a number")


def _with_precision(fn):  # type: ignore[no-untyped-def]
    """Run *fn* with enough decimal precision that no step ever rounds."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with localcontext() as ctx:
            ctx.prec = 200
            ctx.Emax = 999999
            ctx.Emin = -999999
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_with_precision
def parse_quantity(value: QuantityInput) -> Decimal:
    """Return the exact value of a quantity such as ``"250m"`` or ``"1Gi"``.

    Raises ``ValueError`` with a message naming the bad input on junk
    (``"12Mx"``, ``""``, ``"1.2.3"``, ``"--1"``).
    """
    number, _ = _to_decimal(value)
    try:
        return _round_nano(number)
    except InvalidOperation as e:  # pragma: no cover - guarded by the context above
        raise ValueError(f"invalid quantity {value!r}: {e}") from e


@_with_precision
def quantity_format(value: QuantityInput) -> QuantityFormat:
    """The format a quantity string asks for: ``Ki`` → BinarySI, ``e3`` → DecimalExponent, else DecimalSI."""
    return _to_decimal(value)[1]


def _decimal_mantissa(value: Decimal) -> tuple[int, int]:
    """Split into ``(mantissa, exponent)`` with exponent a multiple of 3.

    Trailing zeros move into the exponent first, then the exponent is lowered
    to a multiple of three: 1500 → (1500, 0), 2000 → (2, 3), 0.1 → (100, -3).
    """
    sign, digits, exponent = value.normalize().as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exponent % 3  # Python's % is non-negative: floors toward -inf.
    mantissa *= 10**shift
    exponent -= shift
    return (-mantissa if sign else mantissa), exponent


def _format_decimal(value: Decimal, exponent_form: bool) -> str:
    mantissa, exponent = _decimal_mantissa(value)
    if exponent == 0:
        return str(mantissa)
    if exponent_form:
        return f"{mantissa}e{exponent}"
    if exponent in _DECIMAL_BY_EXPONENT:
        return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"
    # Beyond exa: fold the excess back into the mantissa and use "E".
    return f"{mantissa * 10 ** (exponent - 18)}E"


def _format_binary(value: int) -> str:
    power = 0
    while value % 1024 == 0 and power < 6:
        value //= 1024
        power += 1
    return f"{value}{_BINARY_BY_POWER.get(power, '')}"


@_with_precision
def format_quantity(value: Decimal | int, *, binary: bool = False, exponent: bool = False) -> str:
    """Canonical string for *value*, following Kubernetes' CanonicalizeString.

    Decimal form (default): the exponent is the largest multiple of three that
    keeps the mantissa integral, so 0.1 → ``100m``, 1500 → ``1500``,
    2000 → ``2k``.  ``binary=True`` uses powers of 1024 (1048576 → ``1Mi``)
    but, as Kubernetes does, falls back to decimal for |value| < 1024 and for
    non-integers so that nothing is rounded.  ``exponent=True`` writes
    ``e<exp>`` instead of an SI suffix.
    """
    number = _round_nano(Decimal(value))
    if number == 0:
        return "0"
    if binary and abs(number) >= 1024 and number == number.to_integral_value():
        text = _format_binary(abs(int(number)))
        return f"-{text}" if number < 0 else text
    return _format_decimal(number, exponent)


def canonicalize_quantity(text: QuantityInput) -> str:
    """Parse then re-format in the format the input's suffix implies.

    This is what the API server does to every quantity it stores:
    ``"1000m"`` → ``"1"``, ``"1.5Gi"`` → ``"1536Mi"``, ``"1e3"`` → ``"1e3"``.
    """
    fmt = quantity_format(text)
    number = parse_quantity(text)
    return format_quantity(number, binary=fmt == "BinarySI", exponent=fmt == "DecimalExponent")


@_with_precision
def cpu_millis(q: QuantityInput) -> int:
    """Value in thousandths, rounded up (Kubernetes' ``MilliValue``): ``"0.1"`` → 100, ``"1n"`` → 1."""
    return int((parse_quantity(q) * 1000).to_integral_value(rounding=ROUND_CEILING))


@_with_precision
def bytes_value(q: QuantityInput) -> int:
    """Integral value, rounded up (Kubernetes' ``Value``): ``"1Ki"`` → 1024, ``"1.5"`` → 2."""
    return int(parse_quantity(q).to_integral_value(rounding=ROUND_CEILING))
