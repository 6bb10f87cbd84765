"""Events: the only thing the ledger stores. Balances are folds over them.

An event is made by one command at one till (enrol, sale, refund, adjustment, expiry...).
Its ``postings`` say what it does to balances; ``data`` holds what the command was about
(the sale's lines, the refund's units, the card code...), as JSON-able values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .ids import LIFETIME_LOT


class Unit(str, Enum):
    """What a posting counts. POINTS, SPEND, LEVEL and OFFER are kept in lots (they can
    expire); STAMPS, MONEY and COUNT are plain integer balances.

    SPEND: a tier program's qualifying spend (minor units; lots expire out of a rolling
    window). LEVEL: a tier reached (a lot whose size is the level index, expiring when the
    tier may be re-evaluated; program id ``<tiers>:level``). MONEY: a cashback wallet in
    minor units. OFFER: next-visit offers available. COUNT: uses of a code or referrals.
    """

    POINTS = "points"
    STAMPS = "stamps"
    SPEND = "spend"
    LEVEL = "level"
    MONEY = "money"
    OFFER = "offer"
    COUNT = "count"


LOT_UNITS = frozenset({Unit.POINTS, Unit.SPEND, Unit.LEVEL, Unit.OFFER})


class Kind(str, Enum):
    CUSTOMER_ENROLLED = "customer.enrolled"
    CARD_ISSUED = "card.issued"
    CARD_BLOCKED = "card.blocked"
    SALE_COMMITTED = "sale.committed"
    REFUND_COMMITTED = "refund.committed"
    COUPON_ISSUED = "coupon.issued"
    REFERRAL_REWARDED = "referral.rewarded"
    WALLET_PAID_OUT = "wallet.paid_out"
    ACCOUNT_ADJUSTED = "account.adjusted"
    POINTS_EXPIRED = "points.expired"


@dataclass(frozen=True)
class Posting:
    """One change to one balance.

    Attributes:
      program: the program id whose balance changes.
      unit: points or stamps.
      delta: signed integer change.
      lot: for a debit of points, the lot to take from first (an expiry names its lot; a
        reversal names the lot its sale earned). For a credit, the lot it adds to: a credit
        that never expires names ``ids.LIFETIME_LOT`` (``Posting.credit``); without a name
        (credits that expire, and every credit recorded before lifetime lots existed) the
        lot is the crediting event's own (``ids.lot_id``).
      expires_at: for a credit of points, when the lot it creates expires (None: never).
    """

    program: str
    unit: Unit
    delta: int
    lot: str | None = None
    expires_at: datetime | None = None

    @staticmethod
    def credit(program: str, unit: Unit, delta: int, expires_at: datetime | None) -> Posting:
        """A credit of a unit counted by the sum of its lots (points, tier spend): to a lot
        of its own that expires at ``expires_at``, or, when it never expires, to the
        customer's one lifetime lot of the program (its lots would otherwise grow by one per
        sale, kept until spent). Not for tier marks (LEVEL: the highest live lot counts)."""
        if expires_at is None:
            return Posting(program, unit, delta, lot=LIFETIME_LOT)
        return Posting(program, unit, delta, expires_at=expires_at)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "program": self.program,
            "unit": self.unit.value,
            "delta": self.delta,
        }
        if self.lot is not None:
            out["lot"] = self.lot
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at.isoformat()
        return out

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Posting:
        expires = raw.get("expires_at")
        return Posting(
            program=str(raw["program"]),
            unit=Unit(raw["unit"]),
            delta=int(raw["delta"]),
            lot=raw.get("lot"),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True)
class Event:
    """A fact recorded at a till.

    Attributes:
      id: globally unique (UUIDv7 made at the till; derived for expiries).
      kind: what happened.
      terminal_id: the till that recorded it.
      at: when it happened, as the POS said (timezone-aware).
      customer_id: whose balances it touches; None for an anonymous sale.
      key: the idempotency key it came from (POS receipt id, refund id), if any.
      postings: the balance changes.
      data: kind-specific content, JSON-able.
      seq: the per-till sequence number, assigned by the ledger (0 until appended).
    """

    id: str
    kind: Kind
    terminal_id: str
    at: datetime
    customer_id: str | None
    key: str | None = None
    postings: tuple[Posting, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0

    def body(self) -> dict[str, Any]:
        """Everything but ``seq``, as JSON-able values (what the hash chain covers with seq)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "terminal_id": self.terminal_id,
            "at": self.at.isoformat(),
            "customer_id": self.customer_id,
            "key": self.key,
            "postings": [p.to_json() for p in self.postings],
            "data": dict(self.data),
        }

    @staticmethod
    def from_body(raw: Mapping[str, Any], seq: int = 0) -> Event:
        return Event(
            id=str(raw["id"]),
            kind=Kind(raw["kind"]),
            terminal_id=str(raw["terminal_id"]),
            at=datetime.fromisoformat(raw["at"]),
            customer_id=raw.get("customer_id"),
            key=raw.get("key"),
            postings=tuple(Posting.from_json(p) for p in raw.get("postings", ())),
            data=dict(raw.get("data", {})),
            seq=seq,
        )
