"""Counts in printed lines: `1 prompt`, `3 prompts`."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n noun`, the noun in its plural (`plural`, else noun + "s") unless n is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def are(n: int) -> str:
    """The verb after `counted(n, ...)`: `1 device is`, `2 devices are`."""
    return "is" if n == 1 else "are"


def agreeing(n: int, one: str, many: str) -> str:
    """The word that agrees with n things: `agreeing(1, "applies", "apply")` is "applies", with 2 "apply"."""
    return one if n == 1 else many


def or_list(items) -> str:
    """'1, 2 or 4'."""
    *others, last = map(str, items)
    return f"{', '.join(others)} or {last}" if others else last
