"""A customer's loyalty state, folded from events.

Points are kept in lots (one per crediting event and program) so they can expire N days
after they were earned; debits consume the soonest-expiring lots first. A balance may go
negative (a refund is never blocked): the debt is repaid by later credits before any new lot
holds points. So at every moment ``sum(lot.remaining) == max(balance, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .events import LOT_UNITS, Event, Posting, Unit
from .ids import LIFETIME_LOT, lot_id

# ``Lot.earned_at`` of every lifetime lot (``ids.LIFETIME_LOT``): it never expires.
LIFETIME_EARNED = datetime(1970, 1, 1, tzinfo=UTC)

_FAR_FUTURE = datetime.max.replace(year=9999)


@dataclass(frozen=True, slots=True)
class Lot:
    """Points credited by one event to one program, and how many of them are left.

    Immutable: a change replaces the lot in its account, so copying a state copies the lot
    dicts shallowly (a regular customer holds hundreds of lots and every commit copies).
    """

    lot_id: str
    earned_at: datetime
    expires_at: datetime | None
    remaining: int

    def sort_key(self) -> tuple[int, str, str]:
        # Soonest-expiring first; lots that never expire last; then by age, then by id.
        if self.expires_at is None:
            return (1, "", self.lot_id)
        return (0, self.expires_at.isoformat(), self.lot_id)


@dataclass
class PointsAccount:
    balance: int = 0
    lots: dict[str, Lot] = field(default_factory=dict)
    # When not None: the ids of the lots ``credit`` and ``debit`` added, replaced or removed
    # since the account was copied with ``track`` (``CustomerState.copy``), so the ledger
    # writes only those instead of comparing every lot (a regular customer holds hundreds).
    # Only these two methods change ``lots`` of a tracked account.
    changed: set[str] | None = field(default=None, compare=False, repr=False)

    def credit(self, lot: str, amount: int, at: datetime, expires_at: datetime | None) -> None:
        kept = max(0, min(amount, self.balance + amount))  # repay debt first
        self.balance += amount
        if kept > 0:
            known = self.lots.get(lot)
            if known is not None:  # a second credit of the same event (welcome + referral)
                self.lots[lot] = replace(known, remaining=known.remaining + kept)
            else:
                self.lots[lot] = Lot(lot, at, expires_at, kept)
            if self.changed is not None:
                self.changed.add(lot)

    def debit(self, amount: int, prefer: str | None = None) -> None:
        self.balance -= amount
        left = amount
        order = sorted(self.lots.values(), key=Lot.sort_key)
        if prefer is not None and prefer in self.lots:
            order.remove(self.lots[prefer])
            order.insert(0, self.lots[prefer])
        for lot in order:
            if left == 0:
                break
            take = min(lot.remaining, left)
            left -= take
            if lot.remaining == take:
                del self.lots[lot.lot_id]
            else:
                self.lots[lot.lot_id] = replace(lot, remaining=lot.remaining - take)
            if self.changed is not None:
                self.changed.add(lot.lot_id)

    def due(self, at: datetime) -> list[Lot]:
        """Lots with points left whose expiry is at or before ``at``, soonest first."""
        return sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.expires_at is not None and lot.expires_at <= at
            ),
            key=Lot.sort_key,
        )

    def spendable(self, at: datetime) -> int:
        """The balance at ``at``, counting lots already past expiry as gone."""
        return self.balance - sum(lot.remaining for lot in self.due(at))

    def expiring_between(self, start: datetime, end: datetime) -> int:
        return sum(
            lot.remaining
            for lot in self.lots.values()
            if lot.expires_at is not None and start < lot.expires_at <= end
        )


@dataclass
class CustomerState:
    """Balances of one customer: points accounts and stamp counts, per program id."""

    customer_id: str
    points: dict[str, PointsAccount] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)
    # Other lot-kept units (SPEND, LEVEL, OFFER) and plain counters (MONEY, COUNT).
    lotted: dict[tuple[str, Unit], PointsAccount] = field(default_factory=dict)
    counters: dict[tuple[str, Unit], int] = field(default_factory=dict)

    def lots_of(self, program: str, unit: Unit) -> PointsAccount:
        if unit is Unit.POINTS:
            return self.account(program)
        return self.lotted.setdefault((program, unit), PointsAccount())

    def counter(self, program: str, unit: Unit) -> int:
        return self.counters.get((program, unit), 0)

    def wallet(self, program: str) -> int:
        return self.counter(program, Unit.MONEY)

    def account(self, program: str) -> PointsAccount:
        return self.points.setdefault(program, PointsAccount())

    def stamp_count(self, program: str) -> int:
        return self.stamps.get(program, 0)

    def apply(self, event: Event) -> None:
        """Fold one event into this state (the one place balances change)."""
        for posting in event.postings:
            self.apply_posting(event, posting)

    def apply_posting(self, event: Event, posting: Posting) -> None:
        if posting.unit is Unit.STAMPS:
            self.stamps[posting.program] = self.stamp_count(posting.program) + posting.delta
            return
        if posting.unit not in LOT_UNITS:
            key = (posting.program, posting.unit)
            self.counters[key] = self.counters.get(key, 0) + posting.delta
            return
        account = self.lots_of(posting.program, posting.unit)
        if posting.delta >= 0:
            # A credit names its lot only to share one (``ids.LIFETIME_LOT``); otherwise the
            # lot is the crediting event's own.
            lot = posting.lot if posting.lot is not None else lot_id(event.id, posting.program)
            # The lifetime lot's "earned" moment is fixed: tills fold pulled events in
            # arrival order, so "its first credit" would differ between tills and rebuilds.
            earned = LIFETIME_EARNED if lot == LIFETIME_LOT else event.at
            account.credit(lot, posting.delta, earned, posting.expires_at)
        else:
            account.debit(-posting.delta, posting.lot)

    def copy(self, *, track: bool = False) -> CustomerState:
        """An independent copy. Written out rather than ``copy.deepcopy``: it runs on every
        commit over all of a customer's lots. Lots are immutable, so their dicts are copied
        shallowly. ``track``: the copy's accounts record which lots change from here on
        (``PointsAccount.changed``); accounts created later do not."""

        def account(acc: PointsAccount) -> PointsAccount:
            return PointsAccount(acc.balance, dict(acc.lots), set() if track else None)

        return CustomerState(
            self.customer_id,
            points={k: account(v) for k, v in self.points.items()},
            stamps=dict(self.stamps),
            lotted={k: account(v) for k, v in self.lotted.items()},
            counters=dict(self.counters),
        )

    def balances(self) -> dict[tuple[str, Unit], int]:
        out: dict[tuple[str, Unit], int] = {}
        for program, account in self.points.items():
            out[(program, Unit.POINTS)] = account.balance
        for program, count in self.stamps.items():
            out[(program, Unit.STAMPS)] = count
        for key, account in self.lotted.items():
            out[key] = account.balance
        out.update(self.counters)
        return out

    def all_accounts(self) -> dict[str, PointsAccount]:
        """Every lot-kept account by program id (program ids never share a lot unit)."""
        out = dict(self.points)
        out.update({program: acc for (program, _), acc in self.lotted.items()})
        return out


def fold(customer_id: str, events: list[Event]) -> CustomerState:
    """The state after ``events`` (those of other customers are ignored), in list order."""
    state = CustomerState(customer_id)
    for event in events:
        if event.customer_id == customer_id:
            state.apply(event)
    return state
