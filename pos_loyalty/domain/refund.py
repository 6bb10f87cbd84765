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

from .engine import LineResult
from .errors import DomainError
from .events import Posting, Unit
from .ids import lot_id
from .money import scale_floor
from .programs import CashbackProgram, PointsProgram, ProgramSet


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


def _expiry(program: PointsProgram, at: datetime) -> datetime | None:
    return at + timedelta(days=program.expiry_days) if program.expiry_days else None
