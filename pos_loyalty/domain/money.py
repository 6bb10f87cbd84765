"""Money in integer minor units, and the one allocation rule used to split amounts.

No float ever touches money or points (DESIGN invariant 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, order=True)
class Money:
    """An amount in minor units (cents) of an ISO 4217 currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:  # bool and float are refused
            raise TypeError("money is an integer number of minor units")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"{self.currency!r} is not an ISO 4217 currency code")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    def __str__(self) -> str:
        return format_minor(self.minor) + " " + self.currency


def format_minor(minor: int, decimals: int = 2) -> str:
    """``320`` → ``"3.20"``; ``-5`` → ``"-0.05"`` (display only)."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"


def allocate(total: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> list[int]:
    """Split ``total`` over ``weights`` in proportion, by the largest-remainder rule.

    Every share is an integer, the shares add up to ``total`` exactly, and no share exceeds
    its cap (a cap defaults to the weight). Ties go to the earlier index. Raises ValueError
    when ``total`` is negative or larger than the caps allow.
    """
    limits = list(weights if caps is None else caps)
    if total < 0 or total > sum(limits):
        raise ValueError(f"cannot allocate {total} over capacity {sum(limits)}")
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        shares = [0] * len(weights)
    else:
        shares = [min(total * w // weight_sum, cap) for w, cap in zip(weights, limits, strict=True)]
        order = sorted(
            range(len(weights)),
            key=lambda i: (-(total * weights[i] % weight_sum), i),
        )
        left = total - sum(shares)
        for i in order:
            if left == 0:
                break
            if shares[i] < limits[i]:
                shares[i] += 1
                left -= 1
    left = total - sum(shares)
    # Caps may have blocked a proportional share: hand the rest to lines with room, in order.
    for i in range(len(shares)):
        if left == 0:
            break
        room = min(limits[i] - shares[i], left)
        shares[i] += room
        left -= room
    return shares


def scale_floor(amount: int, part: int, whole: int) -> int:
    """``amount * part // whole``: the proportional share, truncated toward zero."""
    if whole == 0:
        return 0
    if amount < 0:
        return -((-amount) * part // whole)
    return amount * part // whole
