"""Checks at the door: one way to refuse a setting, naming it and what is accepted."""

from __future__ import annotations

import numbers


def integer(name: str, value, minimum: int = 1, maximum: int | None = None, accepted: str = "") -> int:
    """`value` as an int, if it is a whole number in [minimum, maximum]; else a ValueError naming `name`.

    `accepted` replaces the default description of the accepted values in the message (e.g. "or null").
    """
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < minimum or (maximum is not None and value > maximum):
        span = (
            f"an integer in [{minimum}, {maximum}]"
            if maximum is not None
            else ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        )
        raise ValueError(f"{name} must be {span}{accepted}, got {value!r}")
    return int(value)
