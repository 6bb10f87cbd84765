"""The rules engine: basket + customer state + programs + time → proposed effects.

Pure: no I/O, no clock. The steps, in order (each documented where it happens):

0. codes are checked (promo codes, signed coupons); a rejected code refuses the basket
   with its reason (``unknown_code``, ``code_expired``, ``minimum_not_met``,
   ``code_used_up``, ``not_eligible``);
1. stamp-card rewards (free or discounted qualifying units, cheapest first);
2. the tier is worked out: spend so far plus this sale (what is left after step 1);
3. promotions, in ascending ``priority`` (then configured order): cardholder offers,
   bundles, buy X get Y, the tier's percentage off, the next-visit offer, promo codes,
   coupons, green actions. Stacking: an exclusive promotion is skipped when another already
   applied and stops all later ones when it applies. Cap: promotions together never take
   more than ``max_discount_bp`` of the basket's total (stamp rewards and payments are not
   promotions: they are earned or paid);
4. paying with points and with a cashback wallet (payments, never more than what is left);
5. earning: points (times the tier's multiplier), stamps, cashback, tier spend, a
   next-visit offer, a reward coupon, a gift; and nudges for what is almost within reach.

Rounding rule: money is split over lines by the largest-remainder rule (``money.allocate``);
points earned are truncated once per receipt. The total discount never exceeds the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pos_loyalty.domain.catalog as catalog

from .basket import Basket
from .errors import DomainError
from .events import Posting, Unit
from .money import allocate, format_minor
from .programs import (
    CashbackProgram,
    PointsProgram,
    ProgramSet,
    StampBasis,
    StampCardProgram,
    StampReward,
)
from .state import CustomerState

Context = catalog.Context


@dataclass(slots=True)
class LineResult:
    """What the quote does to one basket line.

    ``discount`` includes the part paid with points; ``total = gross - discount`` is what the
    customer pays in money. ``points_paid``, ``earn_base``, ``stamps_earned`` and
    ``stamps_redeemed`` are kept per line so a refund can reverse them in proportion.
    """

    index: int
    sku: str
    category: str | None
    qty: int
    unit_price: int
    discount: int = 0
    rewarded_units: int = 0
    free_units: int = 0
    gift: str | None = None  # the gift program that added this line at zero
    # Units taken into a bundle by this quote (not stored: only the promotions after the
    # bundle read it; a member price does not come off a unit sold at the bundle's price).
    bundled_units: int = 0
    # The member price this quote gave the line's units (not stored; read by the bundles
    # and buy-X-get-Y after it, which count a unit at that price).
    member_price: int | None = None
    points_paid: dict[str, int] = field(default_factory=dict)
    earn_base: dict[str, int] = field(default_factory=dict)
    stamps_earned: dict[str, int] = field(default_factory=dict)
    stamps_redeemed: dict[str, int] = field(default_factory=dict)

    @property
    def gross(self) -> int:
        return self.qty * self.unit_price

    @property
    def total(self) -> int:
        return self.gross - self.discount

    def to_json(self) -> dict[str, Any]:
        """Compact: zero amounts, empty maps and a missing category are left out (the ledger
        keeps every sale line; ``from_json`` restores the defaults)."""
        out: dict[str, Any] = {"sku": self.sku, "qty": self.qty, "unit_price": self.unit_price}
        if self.category is not None:
            out["category"] = self.category
        if self.discount:
            out["discount"] = self.discount
        if self.free_units:
            out["free_units"] = self.free_units
        for name in ("points_paid", "earn_base", "stamps_earned", "stamps_redeemed"):
            values = {k: v for k, v in getattr(self, name).items() if v}
            if values:
                out[name] = values
        if self.gift:
            out["gift"] = self.gift
        return out

    @staticmethod
    def from_json(index: int, raw: Mapping[str, Any]) -> LineResult:
        return LineResult(
            index=index,
            sku=str(raw["sku"]),
            category=raw.get("category"),
            qty=int(raw["qty"]),
            unit_price=int(raw["unit_price"]),
            discount=int(raw.get("discount", 0)),
            free_units=int(raw.get("free_units", 0)),
            points_paid={str(k): int(v) for k, v in raw.get("points_paid", {}).items()},
            earn_base={str(k): int(v) for k, v in raw.get("earn_base", {}).items()},
            stamps_earned={str(k): int(v) for k, v in raw.get("stamps_earned", {}).items()},
            stamps_redeemed={str(k): int(v) for k, v in raw.get("stamps_redeemed", {}).items()},
            gift=raw.get("gift"),
        )


@dataclass(frozen=True)
class Discount:
    program: str
    line: int
    amount: int
    label: str


@dataclass
class Quote:
    """The proposed effects of a basket. ``postings`` are what a commit would record."""

    lines: list[LineResult]
    discounts: list[Discount]
    earned: dict[str, int]
    redeemed: dict[str, int]
    postings: list[Posting]
    tier: str | None = None
    spend: dict[str, int] = field(default_factory=dict)  # tier spend recorded, per program
    uses: dict[str, int] = field(default_factory=dict)  # ledger-wide usage counters
    issued: list[dict[str, Any]] = field(default_factory=list)  # offers, coupons, gifts
    nudges: list[str] = field(default_factory=list)
    referral: str | None = None  # a referral program whose first-purchase reward is due

    @property
    def total_before(self) -> int:
        return sum(line.gross for line in self.lines)

    @property
    def total_discount(self) -> int:
        return sum(line.discount for line in self.lines)

    @property
    def total(self) -> int:
        return self.total_before - self.total_discount


def quote(
    basket: Basket,
    state: CustomerState | None,
    programs: ProgramSet,
    at: datetime,
    ctx: catalog.Context | None = None,
) -> Quote:
    """Work out what ``basket`` would do for the customer in ``state`` at ``at``.

    ``state`` None is an anonymous basket: no loyalty rewards, no earning, no redemption;
    promotions open to everybody (promo codes, bundles, buy X get Y, green actions, gifts)
    still apply. ``ctx`` carries what the ledger knows beyond the customer's balances
    (usage counts, the store, the customer's tags, trusted coupon keys).
    Raises DomainError for a request that cannot be honoured (unknown program, not enough
    points, a rejected code).
    """
    ctx = ctx or catalog.Context()
    lines = [
        LineResult(i, ln.sku, ln.category, ln.qty, ln.unit_price)
        for i, ln in enumerate(basket.lines)
    ]
    result = Quote(lines, [], {}, {}, [])
    codes = catalog.resolve_codes(basket, state, programs, at, ctx)
    _check_redemptions(basket, state, programs, at)
    catalog.check_wallet(basket, state, programs)
    if state is not None:
        for card in programs.stamp_cards:
            _apply_stamp_rewards(card, state.stamp_count(card.id), result)
    tier = catalog.work_out_tier(programs, state, at, result)
    catalog.apply_promotions(basket, state, programs, at, ctx, codes, tier, result)
    if state is None:
        catalog.finish_anonymous(programs, at, ctx, result)
        return result
    catalog.record_spend(programs, at, tier, result)
    for redemption in basket.redeem:
        program = programs.get(redemption.program)
        assert isinstance(program, PointsProgram)
        _apply_points_payment(program, redemption.points, result)
    for payment in basket.wallet:
        wallet = programs.get(payment.program)
        assert isinstance(wallet, CashbackProgram)
        catalog.apply_wallet_payment(wallet, payment.amount, result)
    multiplier = tier.level.multiplier_percent if tier is not None else 100
    for pts in programs.points:
        _earn_points(pts, at, result, multiplier)
    for card in programs.stamp_cards:
        _earn_stamps(card, result)
    catalog.earn_catalog(basket, state, programs, at, ctx, tier, result)
    return result


def _check_redemptions(
    basket: Basket, state: CustomerState | None, programs: ProgramSet, at: datetime
) -> None:
    seen: set[str] = set()
    for redemption in basket.redeem:
        program = programs.get(redemption.program)
        if program is None:
            raise DomainError("unknown_program", f"There is no program {redemption.program!r}.")
        if not isinstance(program, PointsProgram) or not program.redeemable:
            raise DomainError(
                "not_redeemable", f"The program {redemption.program!r} cannot pay for a basket."
            )
        if redemption.program in seen:
            raise DomainError(
                "duplicate_redemption", f"The program {redemption.program!r} is redeemed twice."
            )
        seen.add(redemption.program)
        if state is None:
            raise DomainError("card_required", "Paying with points needs a customer card.")
        available = state.account(program.id).spendable(at) if program.id in state.points else 0
        if redemption.points > available:
            raise DomainError(
                "insufficient_points",
                f"The customer has {max(available, 0)} {program.label.lower()}, "
                f"{redemption.points} were asked for.",
            )


def _apply_stamp_rewards(card: StampCardProgram, stamps: int, result: Quote) -> None:
    """Rewards available before the sale apply automatically, one per qualifying unit.

    Free item: the cheapest qualifying units become free. Fixed discount: the dearest
    qualifying units each get ``reward_amount`` off (capped at the unit's price), so the
    customer gets the full value when any unit is dear enough.
    """
    rewards = max(stamps, 0) // card.required
    if rewards == 0:
        return
    candidates = [
        line
        for line in result.lines
        if card.qualifies(line.sku, line.category)
        and line.qty - line.rewarded_units > 0
        and line.unit_price > 0
    ]
    dearest_first = card.reward is StampReward.FIXED_DISCOUNT
    candidates.sort(key=lambda ln: (-ln.unit_price if dearest_first else ln.unit_price, ln.index))
    for line in candidates:
        if rewards == 0:
            break
        units = min(rewards, line.qty - line.rewarded_units)
        rewards -= units
        if card.reward is StampReward.FREE_ITEM or card.reward_amount >= line.unit_price:
            # A fixed discount worth the whole unit makes it free too: it earns nothing.
            amount = units * line.unit_price
            line.free_units += units
        else:
            amount = units * card.reward_amount
        amount = min(amount, line.total)
        line.rewarded_units += units
        line.discount += amount
        line.stamps_redeemed[card.id] = line.stamps_redeemed.get(card.id, 0) + units * card.required
        result.discounts.append(Discount(card.id, line.index, amount, card.reward_label))
        result.redeemed[card.id] = result.redeemed.get(card.id, 0) + units * card.required
        result.postings.append(Posting(card.id, Unit.STAMPS, -units * card.required))


def _apply_points_payment(program: PointsProgram, requested: int, result: Quote) -> None:
    """Pay with up to ``requested`` points, never more than what is left to pay.

    A point is worth ``point_value`` minor units; the points used are split over the lines
    in proportion to what is left on each (largest remainder), each line taking only whole
    points that fit in it.
    """
    capacity = [line.total // program.point_value for line in result.lines]
    used = min(requested, sum(capacity))
    if used == 0:
        return
    shares = allocate(used, [line.total for line in result.lines], capacity)
    for line, share in zip(result.lines, shares, strict=True):
        if share == 0:
            continue
        amount = share * program.point_value
        line.discount += amount
        line.points_paid[program.id] = line.points_paid.get(program.id, 0) + share
        result.discounts.append(
            Discount(program.id, line.index, amount, f"Paid with {program.label.lower()}")
        )
    result.redeemed[program.id] = result.redeemed.get(program.id, 0) + used
    result.postings.append(Posting(program.id, Unit.POINTS, -used))


def _earn_points(
    program: PointsProgram, at: datetime, result: Quote, multiplier_percent: int = 100
) -> None:
    """Points on what was actually paid for eligible lines, truncated once per receipt.

    A tier multiplies the rate by ``multiplier_percent / 100`` inside the same single
    truncation: ``base * points_per_unit * multiplier_percent // (unit * 100)``.
    """
    base = 0
    for line in result.lines:
        if line.category is not None and line.category in program.excluded_categories:
            continue
        total = line.qty * line.unit_price - line.discount
        line.earn_base[program.id] = total
        base += total
    earned = base * program.points_per_unit * multiplier_percent // (program.unit * 100)
    if earned <= 0:
        return
    expires = at + timedelta(days=program.expiry_days) if program.expiry_days else None
    result.earned[program.id] = earned
    result.postings.append(Posting.credit(program.id, Unit.POINTS, earned, expires))


def _earn_stamps(card: StampCardProgram, result: Quote) -> None:
    """Stamps on qualifying units not made free (per item), or one per visit."""
    total = 0
    for line in result.lines:
        if not card.qualifies(line.sku, line.category):
            continue
        paid_units = line.qty - line.free_units
        if paid_units <= 0:
            continue
        if card.per is StampBasis.ITEM:
            line.stamps_earned[card.id] = paid_units
            total += paid_units
        elif total == 0:
            line.stamps_earned[card.id] = 1
            total = 1
    if total:
        result.earned[card.id] = result.earned.get(card.id, 0) + total
        result.postings.append(Posting(card.id, Unit.STAMPS, total))


def receipt_text(programs: ProgramSet, state: CustomerState, quote_: Quote) -> list[str]:
    """Lines for the receipt and for the cashier to read out, from balances in ``state``."""
    out: list[str] = []
    for card in programs.stamp_cards:
        out.append(f"{card.label}: {state.stamp_count(card.id)}/{card.required} stamps")
    for pts in programs.points:
        balance = state.points[pts.id].balance if pts.id in state.points else 0
        out.append(f"{pts.label}: {balance}")
    for wallet in programs.of(CashbackProgram):
        out.append(f"{wallet.label}: {format_minor(state.wallet(wallet.id))}")
    if quote_.tier is not None:
        out.append(f"Tier: {quote_.tier}")
    if quote_.total_discount:
        out.append(f"You saved {format_minor(quote_.total_discount)}")
    for item in quote_.issued:
        out.append(str(item["text"]))
    return out
