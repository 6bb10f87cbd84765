"""Program definitions: what a shop configures, as immutable records.

Each record documents its fields; the configuration loader (``pos_loyalty.config``) builds
them from TOML and the rules engine (``pos_loyalty.domain.engine``) reads them. All amounts
are integers in minor units of the shop's currency; no float is involved anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import TypeVar, Union


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


@dataclass(frozen=True)
class Scope:
    """Guards every promotion carries (issue 3, "guards over all programs").

    Attributes:
      priority: promotions are tried in ascending priority (then configured order).
      exclusive: an exclusive promotion never combines with another: it is skipped when a
        promotion already applied, and once it applies no later promotion does.
      valid_from / valid_until: the program's window, both ends inclusive (None: open).
      stores: store ids where it runs; empty means every store.
    """

    priority: int = 100
    exclusive: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    stores: frozenset[str] = frozenset()

    def active(self, at: datetime, store_id: str) -> bool:
        if self.valid_from is not None and at < self.valid_from:
            return False
        if self.valid_until is not None and at > self.valid_until:
            return False
        return not self.stores or store_id in self.stores


@dataclass(frozen=True)
class Target:
    """Which lines a program looks at: by category or SKU; both empty means every line."""

    categories: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()

    def matches(self, sku: str, category: str | None) -> bool:
        if not self.categories and not self.skus:
            return True
        return sku in self.skus or (category is not None and category in self.categories)


ALL = Target()


class Downgrade(str, Enum):
    """NEVER: a tier once reached is kept. WINDOW: kept ``window_days`` from when it was
    reached, then re-evaluated from the spend in the window."""

    NEVER = "never"
    WINDOW = "window"


@dataclass(frozen=True)
class TierLevel:
    """One tier: reached when qualifying spend >= ``threshold`` (inclusive, minor units).

    ``multiplier_percent`` multiplies every points program's rate (125 = x1.25; one
    truncation per receipt); ``percent_off_bp`` is a discount on the basket in basis points
    (500 = 5%).
    """

    name: str
    threshold: int
    multiplier_percent: int = 100
    percent_off_bp: int = 0


@dataclass(frozen=True)
class TierProgram:
    """Tiers by qualifying spend: what customers paid in money or points/wallet for lines,
    after discounts. ``window_days`` 0 means lifetime spend, N a rolling N-day window."""

    id: str
    label: str
    levels: tuple[TierLevel, ...]
    window_days: int = 0
    downgrade: Downgrade = Downgrade.NEVER
    excluded_categories: frozenset[str] = frozenset()
    scope: Scope = Scope()

    def level_for(self, spend: int) -> int:
        """Index of the highest level whose threshold ``spend`` reaches (levels ascending)."""
        reached = 0
        for i, level in enumerate(self.levels):
            if spend >= level.threshold:
                reached = i
        return reached


@dataclass(frozen=True)
class PromoCodeProgram:
    """A reusable code typed or scanned at the till: percentage (basis points) or fixed
    amount off the basket or off the ``target`` lines. Limits: ``max_uses`` over all
    customers, ``max_uses_per_customer`` (both 0 = unlimited), counted from the ledger."""

    id: str
    label: str
    code: str
    percent_bp: int = 0
    amount: int = 0
    target: Target = ALL
    min_amount: int = 0
    min_qty: int = 0
    max_uses: int = 0
    max_uses_per_customer: int = 0
    scope: Scope = Scope()


@dataclass(frozen=True)
class CouponProgram:
    """Single-use signed coupons issued to a customer, verified offline (Ed25519).

    A coupon gives ``percent_bp`` or ``amount`` off ``target`` lines, needs a basket of at
    least ``min_amount`` and is valid ``valid_days`` days from issue. ``reward_min_spend``
    > 0 issues one coupon for every sale paying at least that much (a reward).
    """

    id: str
    label: str
    percent_bp: int = 0
    amount: int = 0
    target: Target = ALL
    min_amount: int = 0
    valid_days: int = 30
    reward_min_spend: int = 0
    scope: Scope = Scope()


@dataclass(frozen=True)
class NextVisitProgram:
    """A purchase of at least ``min_amount`` issues ``percent_bp`` off the next purchase
    within ``valid_days`` days; applied automatically, gone after use or the window. A sale
    that used an offer does not issue a new one."""

    id: str
    label: str
    percent_bp: int
    valid_days: int = 7
    min_amount: int = 0
    scope: Scope = Scope()


@dataclass(frozen=True)
class ComboProgram:
    """A bundle: one unit matching each of ``components`` costs ``price`` together."""

    id: str
    label: str
    components: tuple[Target, ...]
    price: int
    scope: Scope = Scope()


@dataclass(frozen=True)
class BuyXGetYProgram:
    """For every ``buy`` + ``get`` matching units, the ``get`` cheapest get ``percent_bp``
    off (10000 = free)."""

    id: str
    label: str
    target: Target
    buy: int
    get: int
    percent_bp: int = 10000
    scope: Scope = Scope()


@dataclass(frozen=True)
class CashbackProgram:
    """``percent_bp`` of what was paid in money is credited to a wallet in minor units
    (one truncation per receipt); the wallet pays toward later baskets; ``payout`` says
    whether it may also be paid out in cash (true cashback) or only spent (bonus)."""

    id: str
    label: str
    percent_bp: int
    payout: bool = False
    excluded_categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MemberOfferProgram:
    """A cardholder-only price (``price`` per unit) or ``percent_bp`` off ``target`` lines,
    optionally only for some ``tiers`` and/or customer ``tags`` (empty: every cardholder)."""

    id: str
    label: str
    target: Target
    price: int | None = None
    percent_bp: int = 0
    tiers: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    scope: Scope = Scope()


@dataclass(frozen=True)
class GiftProgram:
    """A basket of at least ``min_amount`` paid and/or ``min_qty`` ``target`` units gets a
    gift: the SKU ``gift_sku`` at zero, or the next partner voucher from ``vouchers``."""

    id: str
    label: str
    min_amount: int = 0
    min_qty: int = 0
    target: Target = ALL
    gift_sku: str = ""
    vouchers: tuple[str, ...] = ()
    scope: Scope = Scope()


@dataclass(frozen=True)
class GreenProgram:
    """The basket flag ``flag`` (e.g. own_cup) gives ``amount`` off per ``target`` unit."""

    id: str
    label: str
    flag: str
    target: Target
    amount: int
    scope: Scope = Scope()


class ReferralTrigger(str, Enum):
    ENROL = "enrol"
    FIRST_PURCHASE = "first_purchase"


@dataclass(frozen=True)
class ReferralProgram:
    """Every customer has a referral code. A new customer enrolling with it gets
    ``new_customer_points``; the referrer gets ``referrer_points`` plus ``referrer_step``
    per earlier successful referral, at most ``referrer_max`` (0 = no maximum). Rewarded at
    enrolment or at the new customer's first purchase paying at least ``min_amount``."""

    id: str
    label: str
    points_program: str
    new_customer_points: int = 0
    referrer_points: int = 0
    referrer_step: int = 0
    referrer_max: int = 0
    trigger: ReferralTrigger = ReferralTrigger.ENROL
    min_amount: int = 0

    def referrer_reward(self, earlier: int) -> int:
        reward = self.referrer_points + self.referrer_step * max(earlier, 0)
        return min(reward, self.referrer_max) if self.referrer_max else reward


Promotion = Union[
    TierProgram,
    PromoCodeProgram,
    CouponProgram,
    NextVisitProgram,
    ComboProgram,
    BuyXGetYProgram,
    MemberOfferProgram,
    GreenProgram,
]

Program = Union[
    StampCardProgram,
    PointsProgram,
    WelcomeProgram,
    TierProgram,
    PromoCodeProgram,
    CouponProgram,
    NextVisitProgram,
    ComboProgram,
    BuyXGetYProgram,
    CashbackProgram,
    MemberOfferProgram,
    GiftProgram,
    GreenProgram,
    ReferralProgram,
]


@dataclass(frozen=True)
class Nudges:
    """What a quote mentions as almost within reach: a stamp card at most ``stamps_within``
    stamps from a reward, a gift or tier at most ``spend_within`` minor units away."""

    enabled: bool = True
    stamps_within: int = 1
    spend_within: int = 500


_P = TypeVar("_P")


@dataclass(frozen=True)
class ProgramSet:
    """The shop's programs, in configured order (the order the engine applies them)."""

    currency: str
    programs: tuple[Program, ...] = field(default_factory=tuple)
    max_discount_bp: int = 10000  # cap on promotional discounts, basis points of the total
    nudges: Nudges = Nudges()

    def of(self, kind: type[_P]) -> tuple[_P, ...]:
        # Asked about ten times per quote: answered from a per-set memo (the set is frozen
        # and its programs a tuple, so the answer for a kind never changes).
        found = self._of_kind.get(kind)
        if found is None:
            found = self._of_kind[kind] = tuple(p for p in self.programs if isinstance(p, kind))
        return found  # type: ignore[return-value]

    @cached_property
    def _of_kind(self) -> dict[type, tuple[Program, ...]]:
        return {}

    @property
    def tiers(self) -> TierProgram | None:
        found = self.of(TierProgram)
        return found[0] if found else None

    def get(self, program_id: str) -> Program | None:
        for program in self.programs:
            if program.id == program_id:
                return program
        return None

    @property
    def stamp_cards(self) -> tuple[StampCardProgram, ...]:
        return self.of(StampCardProgram)

    @property
    def points(self) -> tuple[PointsProgram, ...]:
        return self.of(PointsProgram)

    @property
    def welcomes(self) -> tuple[WelcomeProgram, ...]:
        return self.of(WelcomeProgram)

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
        if len(self.of(TierProgram)) > 1:
            found.append("only one tiers program can be configured")
        for tiers in self.of(TierProgram):
            if not tiers.levels or tiers.levels[0].threshold != 0:
                found.append(f"{tiers.id}: the first level needs threshold 0")
            for a, b in zip(tiers.levels, tiers.levels[1:], strict=False):
                if b.threshold <= a.threshold:
                    found.append(f"{tiers.id}: level thresholds must go up")
            if tiers.downgrade is Downgrade.WINDOW and not tiers.window_days:
                found.append(
                    f'{tiers.id}: downgrade = "window" needs a rolling window '
                    "(window_days above 0); with lifetime spend a tier is never re-evaluated"
                )
        level_names = {level.name for t in self.of(TierProgram) for level in t.levels}
        for scoped in self.programs:
            scope = getattr(scoped, "scope", None)
            if (
                isinstance(scope, Scope)
                and scope.valid_from is not None
                and scope.valid_until is not None
                and scope.valid_from > scope.valid_until
            ):
                found.append(f"{scoped.id}: valid_from is after valid_until: it would never run")
        codes: set[str] = set()
        for promo in self.of(PromoCodeProgram):
            if promo.code.upper() in codes:
                found.append(f"{promo.id}: the code {promo.code!r} is used twice")
            codes.add(promo.code.upper())
            if (promo.percent_bp > 0) == (promo.amount > 0):
                found.append(f"{promo.id}: give exactly one of percent_bp and amount")
        for coupon in self.of(CouponProgram):
            if (coupon.percent_bp > 0) == (coupon.amount > 0):
                found.append(f"{coupon.id}: give exactly one of percent_bp and amount")
        for offer in self.of(MemberOfferProgram):
            if (offer.price is None) == (offer.percent_bp == 0):
                found.append(f"{offer.id}: give exactly one of price and percent_bp")
            unknown = sorted(offer.tiers - level_names)
            if unknown:
                known = ", ".join(sorted(level_names)) or "none: no tiers program"
                found.append(f"{offer.id}: tiers {unknown} are not tier levels (levels: {known})")
        for combo in self.of(ComboProgram):
            if len(combo.components) < 2:
                found.append(f"{combo.id}: a bundle needs at least two components")
        for gift in self.of(GiftProgram):
            if bool(gift.gift_sku) == bool(gift.vouchers):
                found.append(f"{gift.id}: give exactly one of gift_sku and vouchers")
        for ref in self.of(ReferralProgram):
            if ref.points_program not in points_ids:
                found.append(
                    f"{ref.id}: points_program {ref.points_program!r} is not a points program"
                )
        for bp_program in self.programs:
            bp = getattr(bp_program, "percent_bp", 0)
            if not 0 <= bp <= 10000:
                found.append(f"{bp_program.id}: percent_bp must be between 0 and 10000")
        for welcome in self.welcomes:
            if welcome.points_program not in points_ids:
                found.append(
                    f"{welcome.id}: points_program {welcome.points_program!r} "
                    "is not a points program"
                )
            if welcome.points < 0:
                found.append(f"{welcome.id}: points must not be negative")
        return found
