"""Program definitions: what a shop configures, as immutable records.

Each record documents its fields; the configuration loader (``pos_loyalty.config``) builds
them from TOML and the rules engine (``pos_loyalty.domain.engine``) reads them. All amounts
are integers in minor units of the shop's currency; no float is involved anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Union


class StampBasis(str, Enum):
    """How a stamp card counts: one stamp per qualifying item, or one per visit."""

    ITEM = "item"
    VISIT = "visit"


class StampReward(str, Enum):
    """What a full stamp card gives."""

    FREE_ITEM = "free_item"  # the cheapest qualifying unit in the basket becomes free
    FIXED_DISCOUNT = "fixed_discount"  # a fixed amount off one qualifying unit


@dataclass(frozen=True)
class StampCardProgram:
    """A stamp card: ``required`` stamps give one reward on a qualifying item.

    Attributes:
      id: program id used as key in balances, earned and redeemed.
      label: the name shown to cashier and customer ("Coffee card").
      categories: line categories that qualify (earn stamps, can be rewarded).
      skus: line SKUs that qualify, in addition to ``categories``.
      per: count one stamp per qualifying item, or one per visit with a qualifying item.
      required: stamps that make one reward (9 means "buy 9, the 10th free").
      reward: a free item or a fixed discount.
      reward_amount: minor units off, for ``FIXED_DISCOUNT``; 0 otherwise.
      reward_label: the label of the discount line ("Free coffee").
    """

    id: str
    label: str
    categories: frozenset[str]
    skus: frozenset[str] = frozenset()
    per: StampBasis = StampBasis.ITEM
    required: int = 9
    reward: StampReward = StampReward.FREE_ITEM
    reward_amount: int = 0
    reward_label: str = "Free item"

    def qualifies(self, sku: str, category: str | None) -> bool:
        """Whether a basket line with this SKU and category counts for this card."""
        return sku in self.skus or (category is not None and category in self.categories)


@dataclass(frozen=True)
class PointsProgram:
    """Points per currency unit paid, redeemable as payment, expiring per earned lot.

    Earning base: what the customer actually paid for eligible lines (tax-inclusive line
    prices, after every discount and after the part paid with points); lines in
    ``excluded_categories`` earn nothing. Points earned on a receipt are
    ``base * points_per_unit // unit``: one truncation per receipt.

    Attributes:
      id: program id.
      label: display name ("Points").
      points_per_unit: points earned per full ``unit`` paid.
      unit: minor units per earning step (100 = one point per full 1.00).
      point_value: minor units one point is worth when paying with points.
      expiry_days: points expire this many days after the sale that earned them;
        0 means never.
      excluded_categories: categories that earn no points.
      redeemable: whether the basket may pay with these points.
    """

    id: str
    label: str
    points_per_unit: int = 1
    unit: int = 100
    point_value: int = 1
    expiry_days: int = 365
    excluded_categories: frozenset[str] = frozenset()
    redeemable: bool = True


@dataclass(frozen=True)
class WelcomeProgram:
    """Points credited once, when a customer enrols.

    Attributes:
      id: program id (the reason shown in history).
      label: display name ("Welcome gift").
      points: points credited.
      points_program: the id of the ``PointsProgram`` credited.
    """

    id: str
    label: str
    points: int
    points_program: str


Program = Union[StampCardProgram, PointsProgram, WelcomeProgram]


@dataclass(frozen=True)
class ProgramSet:
    """The shop's programs, in configured order (the order the engine applies them)."""

    currency: str
    programs: tuple[Program, ...] = field(default_factory=tuple)

    def get(self, program_id: str) -> Program | None:
        for program in self.programs:
            if program.id == program_id:
                return program
        return None

    @property
    def stamp_cards(self) -> tuple[StampCardProgram, ...]:
        return tuple(p for p in self.programs if isinstance(p, StampCardProgram))

    @property
    def points(self) -> tuple[PointsProgram, ...]:
        return tuple(p for p in self.programs if isinstance(p, PointsProgram))

    @property
    def welcomes(self) -> tuple[WelcomeProgram, ...]:
        return tuple(p for p in self.programs if isinstance(p, WelcomeProgram))

    def problems(self) -> list[str]:
        """Every inconsistency in the set, as sentences; empty when the set is usable."""
        found: list[str] = []
        seen: set[str] = set()
        for program in self.programs:
            if program.id in seen:
                found.append(f"program id {program.id!r} is used twice")
            seen.add(program.id)
        points_ids = {p.id for p in self.points}
        for card in self.stamp_cards:
            if card.required < 1:
                found.append(f"{card.id}: required must be at least 1")
            if not card.categories and not card.skus:
                found.append(f"{card.id}: needs at least one category or sku")
            if card.reward is StampReward.FIXED_DISCOUNT and card.reward_amount <= 0:
                found.append(f"{card.id}: reward_amount must be positive for fixed_discount")
        for pts in self.points:
            if pts.points_per_unit < 0 or pts.unit < 1 or pts.point_value < 1:
                found.append(f"{pts.id}: points_per_unit >= 0, unit >= 1, point_value >= 1")
            if pts.expiry_days < 0:
                found.append(f"{pts.id}: expiry_days must not be negative")
        for welcome in self.welcomes:
            if welcome.points_program not in points_ids:
                found.append(
                    f"{welcome.id}: points_program {welcome.points_program!r} "
                    "is not a points program"
                )
            if welcome.points < 0:
                found.append(f"{welcome.id}: points must not be negative")
        return found
