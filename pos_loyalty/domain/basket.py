"""A basket as the POS describes it: lines, codes, redemption choices, flags."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BasketLine:
    """One receipt line.

    Attributes:
      sku: the POS's article id.
      category: the POS's category (programs qualify lines by it); may be None.
      qty: units sold, a positive integer.
      unit_price: tax-inclusive price of one unit in minor units, >= 0.
    """

    sku: str
    qty: int
    unit_price: int
    category: str | None = None

    @property
    def gross(self) -> int:
        return self.qty * self.unit_price


@dataclass(frozen=True)
class Redemption:
    """The basket asks to pay ``points`` points of program ``program``."""

    program: str
    points: int


@dataclass(frozen=True)
class WalletPayment:
    """The basket asks to pay ``amount`` minor units from cashback wallet ``program``."""

    program: str
    amount: int


@dataclass(frozen=True)
class Basket:
    """What a quote or a commit is about."""

    lines: tuple[BasketLine, ...]
    codes: tuple[str, ...] = ()
    redeem: tuple[Redemption, ...] = ()
    flags: tuple[str, ...] = field(default_factory=tuple)
    wallet: tuple[WalletPayment, ...] = ()

    @property
    def total_before(self) -> int:
        return sum(line.gross for line in self.lines)
