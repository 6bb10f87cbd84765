"""A basket as the POS describes it: lines, codes, redemption choices, flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DomainError

MAX_QTY = 10_000
MAX_UNIT_PRICE = 100_000_000
MAX_AMOUNT = 1_000_000_000


def _whole(value: object, low: int, high: int, code: str, what: str) -> None:
    """Refuse anything but an int in [low, high] (bool and float included): the service is
    callable from Python directly, so the domain checks what the HTTP layer also checks."""
    if type(value) is not int or not low <= value <= high:
        raise DomainError(code, f"{what} must be a whole number from {low} to {high}.")


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

    def __post_init__(self) -> None:
        if not isinstance(self.sku, str) or not self.sku:
            raise DomainError("invalid_line", "Every line needs a SKU.")
        _whole(self.qty, 1, MAX_QTY, "invalid_line", f"The quantity of {self.sku!r}")
        _whole(self.unit_price, 0, MAX_UNIT_PRICE, "invalid_line", f"The price of {self.sku!r}")

    @property
    def gross(self) -> int:
        return self.qty * self.unit_price


@dataclass(frozen=True)
class Redemption:
    """The basket asks to pay ``points`` points of program ``program``."""

    program: str
    points: int

    def __post_init__(self) -> None:
        _whole(self.points, 1, MAX_AMOUNT, "invalid_points", "Points to redeem")


@dataclass(frozen=True)
class WalletPayment:
    """The basket asks to pay ``amount`` minor units from cashback wallet ``program``."""

    program: str
    amount: int

    def __post_init__(self) -> None:
        _whole(self.amount, 1, MAX_AMOUNT, "invalid_amount", "A wallet payment")


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
