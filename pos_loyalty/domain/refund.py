"""Refunds: reverse what a sale did, in proportion to what comes back.

For every quantity a sale recorded per line (money paid, points paid, points earning base,
stamps earned, stamps redeemed) the part reversed after ``r`` of ``qty`` units have come back
is ``value * r // qty``: cumulative, so refunding a line in pieces reverses exactly what a
full refund would. Points earned are reversed as ``earned * refunded_base // base`` over the
receipt (the same single truncation as earning). Spent points come back as a new lot; a
balance may go negative, a refund is never blocked by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .engine import LineResult
from .errors import DomainError
from .events import Posting, Unit
from .ids import lot_id
from .money import scale_floor
from .programs import (
    CashbackProgram,
    PointsProgram,
    ProgramSet,
    ReferralProgram,
    StampBasis,
    StampCardProgram,
)


@dataclass(frozen=True)
class RefundRequestLine:
    sku: str
    qty: int


@dataclass
class RefundResult:
    """What a refund reverses now.

    Attributes:
      units: units refunded now, per sale line index.
      amount: money to hand back (what was paid in money for those units).
      postings: balance changes.
      reversed_points: points taken back, per program (earned on the refunded part).
      returned_points: points given back, per program (spent on the refunded part).
      reversed_stamps / returned_stamps: the same for stamp cards.
    """

    units: dict[int, int]
    amount: int
    postings: list[Posting]
    reversed_points: dict[str, int]
    returned_points: dict[str, int]
    reversed_stamps: dict[str, int]
    returned_stamps: dict[str, int]


def units_to_refund(
    lines: Sequence[LineResult],
    already: Mapping[int, int],
    request: Sequence[RefundRequestLine] | None,
) -> dict[int, int]:
    """Units per sale line for a request (None: everything not yet refunded).

    A SKU's units are taken from its lines in receipt order. Asking for more than is left
    is refused.
    """
    left = {line.index: line.qty - already.get(line.index, 0) for line in lines}
    if request is None:
        rest = {i: n for i, n in left.items() if n > 0}
        if not rest:
            raise DomainError(
                "already_refunded", "Everything on this receipt was already refunded."
            )
        return rest
    units: dict[int, int] = {}
    for item in request:
        if item.qty <= 0:
            raise DomainError("invalid_quantity", "A refund quantity must be a positive integer.")
        want = item.qty
        matching = [line for line in lines if line.sku == item.sku]
        if not matching:
            raise DomainError("unknown_line", f"The receipt has no line with SKU {item.sku!r}.")
        for line in matching:
            take = min(want, left[line.index] - units.get(line.index, 0))
            if take > 0:
                units[line.index] = units.get(line.index, 0) + take
                want -= take
        if want > 0:
            raise DomainError(
                "refund_exceeds_sale",
                f"Only {item.qty - want} more of {item.sku!r} can be refunded on this receipt.",
            )
    return units


def reverse(
    *,
    sale_event_id: str,
    lines: Sequence[LineResult],
    earned: Mapping[str, int],
    already: Mapping[int, int],
    units: Mapping[int, int],
    programs: ProgramSet,
    at: datetime,
    spend: Mapping[str, int] | None = None,
    expired: Mapping[str, int] | None = None,
    sale_lots: Mapping[str, str] | None = None,
    stamps_reversed: Mapping[str, int] | None = None,
) -> RefundResult:
    """The reversal of ``units`` (per line) given ``already`` refunded units per line.

    The same proportional rule reverses cashback credited (``earned`` of a wallet, over its
    earning base), wallet money paid (given back to the wallet) and a tier's qualifying
    ``spend`` (taken off the lot the sale added). Tier marks already reached stay: the
    downgrade policy decides when a tier is re-evaluated.

    ``expired`` holds, per points program, how many of the points this sale earned have
    already expired: those are gone once and are never taken back a second time.

    ``sale_lots``: per program, the lot the sale's credit named (the customer's lifetime
    lot, ``Posting.credit``): a reversal takes from it first; otherwise from the sale's own.

    ``stamps_reversed``: per stamp card, the stamps earlier refunds of this sale already took
    back (a per-visit card's stamp went with the sale's first line before it went with the
    last qualifying unit: never taken twice).
    """
    after = {line.index: already.get(line.index, 0) + units.get(line.index, 0) for line in lines}

    def part(values: Mapping[int, int], done: Mapping[int, int]) -> int:
        return sum(
            scale_floor(values.get(line.index, 0), done.get(line.index, 0), line.qty)
            for line in lines
        )

    def delta(pick: str, program: str) -> int:
        values = {line.index: getattr(line, pick).get(program, 0) for line in lines}
        return part(values, after) - part(values, already)

    def own_lot(program: str) -> str:
        return (sale_lots or {}).get(program) or lot_id(sale_event_id, program)

    postings: list[Posting] = []
    reversed_points: dict[str, int] = {}
    returned_points: dict[str, int] = {}
    reversed_stamps: dict[str, int] = {}
    returned_stamps: dict[str, int] = {}
    amount = part({ln.index: ln.total for ln in lines}, after) - part(
        {ln.index: ln.total for ln in lines}, already
    )
    for program in programs.points:
        base_by_line = {line.index: line.earn_base.get(program.id, 0) for line in lines}
        base = sum(base_by_line.values())
        total_earned = earned.get(program.id, 0)
        still_earned = total_earned - (expired or {}).get(program.id, 0)
        taken = min(still_earned, scale_floor(total_earned, part(base_by_line, after), base)) - min(
            still_earned, scale_floor(total_earned, part(base_by_line, already), base)
        )
        if taken:
            reversed_points[program.id] = taken
            postings.append(Posting(program.id, Unit.POINTS, -taken, lot=own_lot(program.id)))
        back = delta("points_paid", program.id)
        if back:
            returned_points[program.id] = back
            postings.append(Posting.credit(program.id, Unit.POINTS, back, _expiry(program, at)))
    for wallet in programs.of(CashbackProgram):
        base_by_line = {line.index: line.earn_base.get(wallet.id, 0) for line in lines}
        base = sum(base_by_line.values())
        total_earned = earned.get(wallet.id, 0)
        taken = scale_floor(total_earned, part(base_by_line, after), base) - scale_floor(
            total_earned, part(base_by_line, already), base
        )
        if taken:
            reversed_points[wallet.id] = taken
            postings.append(Posting(wallet.id, Unit.MONEY, -taken))
        back = delta("points_paid", wallet.id)
        if back:
            returned_points[wallet.id] = back
            postings.append(Posting(wallet.id, Unit.MONEY, back))
    tiers = programs.tiers
    if tiers is not None and spend and spend.get(tiers.id):
        values = {line.index: line.earn_base.get(tiers.id, 0) for line in lines}
        taken = part(values, after) - part(values, already)
        if taken:
            postings.append(Posting(tiers.id, Unit.SPEND, -taken, lot=own_lot(tiers.id)))
    for card in programs.stamp_cards:
        if card.per is StampBasis.VISIT:
            taken = _visit_stamp_taken(card, lines, already, after)
            taken = max(0, min(taken, taken - (stamps_reversed or {}).get(card.id, 0)))
        else:
            taken = delta("stamps_earned", card.id)
        if taken:
            reversed_stamps[card.id] = taken
            postings.append(Posting(card.id, Unit.STAMPS, -taken))
        back = delta("stamps_redeemed", card.id)
        if back:
            returned_stamps[card.id] = back
            postings.append(Posting(card.id, Unit.STAMPS, back))
    return RefundResult(
        dict(units),
        amount,
        postings,
        reversed_points,
        returned_points,
        reversed_stamps,
        returned_stamps,
    )


def _visit_stamp_taken(
    card: StampCardProgram,
    lines: Sequence[LineResult],
    already: Mapping[int, int],
    after: Mapping[int, int],
) -> int:
    """A per-visit card's stamp comes back with the last paid unit that qualified for it,
    whichever line it was recorded on: the visit counted as long as one such unit stays."""
    earned = sum(line.stamps_earned.get(card.id, 0) for line in lines)
    if not earned:
        return 0
    qualifying = [
        line
        for line in lines
        if line.stamps_earned.get(card.id)
        or (card.qualifies(line.sku, line.category) and line.qty > line.free_units)
    ]

    def all_back(done: Mapping[int, int]) -> bool:
        return all(done.get(line.index, 0) >= line.qty for line in qualifying)

    return earned if all_back(after) and not all_back(already) else 0


def _expiry(program: PointsProgram, at: datetime) -> datetime | None:
    return at + timedelta(days=program.expiry_days) if program.expiry_days else None


@dataclass(frozen=True)
class Withdrawal:
    """What a sale handed out for the purchase as a whole, taken back when every unit of
    it has been refunded (DESIGN invariant 9: a refund reverses what the sale did).

    Attributes:
      postings: for the sale's customer: the next-visit offers it issued and that are still
        unused, the referral points its purchase triggered (minus any of the sale's points
        that already expired), and the referral re-opened (a later qualifying purchase
        triggers it again).
      uses: ``coupon:<serial>`` uses that retire the reward coupons it issued and that are
        still unused (counted like a redemption on every till).
      offers, coupons: the programs and serials withdrawn (for the answer).
      referral: the referral program whose first-purchase reward this sale triggered; the
        referrer's reward is taken back by the caller, which finds that event.
    """

    postings: list[Posting]
    uses: dict[str, int]
    offers: list[str]
    coupons: list[str]
    referral: str | None


def withdraw_rewards(
    *,
    sale_event_id: str,
    sale_postings: Sequence[Posting],
    sale_data: Mapping[str, Any],
    offer_lots: Mapping[str, Mapping[str, int]],
    usage: Mapping[str, int],
    programs: ProgramSet,
    expired: Mapping[str, int],
) -> Withdrawal:
    """The withdrawal of a fully refunded sale's rewards.

    ``offer_lots``: per next-visit program, the customer's offer lots and what is left of
    each; ``usage``: current use counts of the sale's coupons (``coupon:<serial>``);
    ``expired``: per points program, how many of the sale's points already expired."""
    postings: list[Posting] = []
    offers: list[str] = []
    for posting in sale_postings:
        if posting.unit is Unit.OFFER and posting.delta > 0:
            lot = posting.lot or lot_id(sale_event_id, posting.program)
            left = offer_lots.get(posting.program, {}).get(lot, 0)
            if left > 0:  # not used yet (an offer used on a later visit stays used)
                postings.append(Posting(posting.program, Unit.OFFER, -left, lot=lot))
                offers.append(posting.program)
    uses: dict[str, int] = {}
    serials: list[str] = []
    for coupon in sale_data.get("coupons") or ():
        key = f"coupon:{coupon['serial']}"
        if not usage.get(key):
            uses[key] = 1
            serials.append(str(coupon["serial"]))
    referral: str | None = None
    for posting in sale_postings:
        program = programs.get(posting.program.removesuffix(":pending"))
        if (
            posting.unit is Unit.COUNT
            and posting.delta < 0
            and posting.program.endswith(":pending")
            and isinstance(program, ReferralProgram)
        ):
            referral = program.id
            postings.append(Posting(posting.program, Unit.COUNT, -posting.delta))
            given = next(
                (
                    int(item.get("points", 0))
                    for item in sale_data.get("issued") or ()
                    if item.get("kind") == "referral" and item.get("program") == program.id
                ),
                0,
            )
            # The bonus shares its lot with the points the sale earned; of what expired, the
            # earned points are counted first (as ``reverse`` does), the rest is the bonus's:
            # what is gone is not taken back twice.
            earned = int((sale_data.get("earned") or {}).get(program.points_program, 0))
            gone = max(0, expired.get(program.points_program, 0) - earned)
            take = max(0, given - gone)
            if take:
                credit = next(
                    (
                        p
                        for p in sale_postings
                        if p.program == program.points_program and p.delta > 0
                    ),
                    None,
                )
                lot = (credit.lot if credit else None) or lot_id(
                    sale_event_id, program.points_program
                )
                postings.append(Posting(program.points_program, Unit.POINTS, -take, lot=lot))
    return Withdrawal(postings, uses, offers, serials, referral)
