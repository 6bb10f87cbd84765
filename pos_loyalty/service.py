"""The service layer: the till's commands, one SQLite transaction each.

Enrol, issue/block/replace a card, look up a scanned code, quote, commit (idempotent by the
POS receipt id), refund (idempotent by the refund id), adjust, history. Adapters (HTTP API,
CLI, UI) call these and only these; a Python POS can too (``import pos_loyalty``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.payment_guard import carries_payment_card
from pos_loyalty.config import Settings
from pos_loyalty.domain import catalog, coupons, engine
from pos_loyalty.domain import refund as refunds
from pos_loyalty.domain.basket import Basket
from pos_loyalty.domain.cardcode import CardCodeError, make_card_code, normalise_card_code
from pos_loyalty.domain.errors import Conflict, DomainError, NotFound
from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import derived_id, expiry_event_id, lot_id, uuid7
from pos_loyalty.domain.money import format_minor
from pos_loyalty.domain.programs import (
    CashbackProgram,
    CouponProgram,
    GiftProgram,
    NextVisitProgram,
    PointsProgram,
    ProgramSet,
    PromoCodeProgram,
    ReferralProgram,
    ReferralTrigger,
    StampBasis,
    StampCardProgram,
)
from pos_loyalty.domain.state import CustomerState
from pos_loyalty.ledger import projections
from pos_loyalty.ledger.codec import canonical
from pos_loyalty.ledger.store import CardRow, Ledger, Tx
from pos_loyalty.sync_status import read_status

EXPIRING_SOON_DAYS = 30

# Every quote and commit checks each basket text (skus, categories, codes, receipt id) for
# payment-card data: a pure function of the text, and a shop's skus repeat all day, so the
# answers for short texts are remembered (bounded: 8192 texts of at most 128 characters).
_carries_payment_card_memo = functools.lru_cache(maxsize=8192)(carries_payment_card)


def _carries_payment_card(text: str) -> bool:
    if len(text) <= 128:
        return _carries_payment_card_memo(text)
    return carries_payment_card(text)


def _refuse_card_data(what: str, texts: list[str | None]) -> None:
    """Refuse free text that carries payment-card data (a keyboard card reader typing into
    a form field): nothing is written and the text is not repeated (DESIGN invariant 10)."""
    if any(text and carries_payment_card(text) for text in texts):
        raise DomainError(
            "payment_card_rejected",
            f"The {what} carries payment card data, which is never stored; nothing was done.",
        )


@dataclass(frozen=True)
class Profile:
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    consents: Mapping[str, bool] = field(default_factory=dict)
    referral_code: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SaleRequest:
    """A quote or commit: the basket, the scanned card (optional), the POS's moment."""

    basket: Basket
    card: str | None = None
    receipt_id: str | None = None
    at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # the request as sent, for its hash


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str
    receipt_id: str
    lines: tuple[refunds.RefundRequestLine, ...] | None  # None: full refund
    at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def request_hash(raw: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(raw))).hexdigest()[:32]  # 128 bits: an equality check


class _Retry:
    """A write a POS may send again with the same ``request_id`` (its idempotency key, like
    a sale's receipt id): the first answer is kept in ``receipts`` and a retry gets it back
    with nothing written; the same id with other parameters is 409 ``receipt_conflict``.
    Without a request id every call writes, as before."""

    def __init__(self, service: Service, kind: Kind, request_id: str | None, **params: Any) -> None:
        self.service = service
        self.key = (
            projections.request_key(kind, service.settings.terminal_id, request_id)
            if request_id
            else None
        )
        self.digest = request_hash(
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        )
        self.data: dict[str, Any] = (
            {"request_id": request_id, "request_hash": self.digest} if request_id else {}
        )

    def answered(self, tx: Tx | None = None) -> dict[str, Any] | None:
        """The first answer, when this is a retry (checked again inside the transaction)."""
        if self.key is None:
            return None
        done = (tx or self.service.ledger).receipt(self.key)
        return None if done is None else self.service._replay(done, self.digest)

    def keep(self, tx: Tx, response: dict[str, Any]) -> None:
        if self.key is not None:
            tx.set_response(self.key, response)


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


EARLIEST_AT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AT = datetime(2200, 1, 1, tzinfo=UTC)


def checked_utc(at: datetime) -> datetime:
    """``at`` in UTC, refused outside 2000–2200 (expiry arithmetic must not overflow)."""
    try:
        when = utc(at)
    except OverflowError:
        when = EARLIEST_AT - timedelta(days=1)
    if not EARLIEST_AT <= when < LATEST_AT:
        raise DomainError("invalid_at", "`at` must lie between the years 2000 and 2200.")
    return when


class Service:
    """The till's commands over one ledger and one program set."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        clock: Callable[[], datetime] | None = None,
        online: Callable[[], bool] | None = None,
    ) -> None:
        """``online`` says whether the central server currently confirms redemptions (the
        embedded sync worker provides it). Without it, a till that syncs is online while the
        ledger shows a recent successful pull: a separate ``pos-loyalty sync`` process
        records each one (``sync_state.last_pull_at``)."""
        self.settings = settings
        self._programs = settings.programs
        self.programs_version = 0  # 0: the till's own file; N: the central server's version N
        self._programs_lock = threading.Lock()
        self._pin = threading.local()  # the program set of the command running in a thread
        self.ledger = ledger
        self._clock = clock or (lambda: datetime.now(UTC))
        self.online = online or self.recently_synced
        self._paired = False  # found paired once: stays so (pairing is never undone)
        self._signer: coupons.Signer | None = None
        self._verifiers: tuple[coupons.Verifier, ...] | None = None

    # -- programs: the central server's configuration replaces them at run time ----------
    @property
    def programs(self) -> ProgramSet:
        """The program set of the command running in this thread (pinned when it started,
        see ``_pinned`` below), else the current one."""
        pinned: ProgramSet | None = getattr(self._pin, "programs", None)
        return self._programs if pinned is None else pinned

    def use_programs(self, programs: ProgramSet, version: int) -> bool:
        """Use ``programs`` (the server's configuration ``version``) for every command that
        starts from now on; thread-safe. A command already running finishes with the set it
        started with, and committed receipts (and their idempotent replays) keep their
        stored answers. A version at or below the one in use is ignored (False)."""
        if programs.currency != self.settings.currency:
            raise ValueError(
                f"programs in {programs.currency} for a till in {self.settings.currency}"
            )
        with self._programs_lock:
            if version <= self.programs_version:
                return False
            self._programs = programs
            self.programs_version = version
        return True

    # -- coupon keys ----------------------------------------------------------------------
    def _keys(self) -> tuple[coupons.Signer, tuple[coupons.Verifier, ...]]:
        """This till's signing key (created on first use) and every trusted public key."""
        if self._signer is None or self._verifiers is None:
            from pos_loyalty.signing import (
                Ed25519Verifier,
                SigningKeyError,
                load_or_create_signer,
            )

            try:
                signer = load_or_create_signer(self.settings.coupon_key_file)
            except SigningKeyError as exc:
                raise DomainError("coupon_key_unusable", str(exc)) from None
            trusted = tuple(Ed25519Verifier.from_hex(k) for k in self.settings.coupon_trusted_keys)
            self._signer, self._verifiers = signer, (signer.verifier(), *trusted)
        return self._signer, self._verifiers

    def _context(self, tx: Tx, customer_id: str | None, basket: Basket) -> catalog.Context:
        """What the engine needs from the ledger beyond balances: usage counts, tags, keys."""
        verifiers: tuple[coupons.Verifier, ...] = ()
        keys = [f"promo:{p.id}" for p in self.programs.of(PromoCodeProgram)]
        keys += [f"voucher:{p.id}" for p in self.programs.of(GiftProgram)]
        if any(coupons.looks_like_coupon(c.strip()) for c in basket.codes):
            verifiers = self._keys()[1]
            for code in basket.codes:
                found = coupons.read_code(code.strip(), verifiers)
                if found is not None:
                    keys.append(f"coupon:{found.serial}")
        tags: frozenset[str] = frozenset()
        if customer_id is not None:
            row = tx.customer(customer_id)
            if row is not None:
                tags = frozenset(json.loads(row.profile).get("tags", ()))
        return catalog.Context(
            store_id=self.settings.store_id,
            tags=tags,
            usage=projections.usage_counts(tx.conn, keys),
            verifiers=verifiers,
        )

    # -- time -----------------------------------------------------------------------------
    def now(self) -> datetime:
        return utc(self._clock())

    def resolve_at(self, at: datetime | None) -> datetime:
        """The moment a write happened: the POS's ``at`` or now; refused if in the future."""
        now = self.now()
        if at is None:
            return now
        if at.tzinfo is None:
            raise DomainError(
                "invalid_at", "`at` needs a UTC offset, e.g. 2026-11-22T10:15:00+01:00."
            )
        skew = timedelta(seconds=self.settings.max_clock_skew_seconds)
        try:
            in_future = utc(at) > now + skew
        except OverflowError:
            in_future = at.year > now.year
        if in_future:
            raise DomainError(
                "at_in_future", "`at` lies in the future; the till's clock says otherwise."
            )
        return checked_utc(at)

    def read_at(self, at: datetime | None) -> datetime:
        """For reads: the moment asked about, without the future check."""
        if at is None:
            return self.now()
        if at.tzinfo is None:
            raise DomainError(
                "invalid_at", "`at` needs a UTC offset, e.g. 2026-11-22T10:15:00+01:00."
            )
        return checked_utc(at)

    # -- cards ----------------------------------------------------------------------------
    def normalise_scan(self, scanned: str) -> str:
        """The loyalty card code in a scan; payment-card data is refused and never kept. A
        signed digital card (``LC1:...``, ``drivers.cards``) gives its code once one of the
        shop's card keys (``[shop] card_public_keys``) verifies it."""
        if carries_payment_card(scanned):
            raise DomainError(
                "payment_card_rejected",
                "That is a payment card. Payment card data is never stored: scan the loyalty card.",
            )
        if scanned.strip()[:4].upper() == "LC1:":
            scanned = self._signed_card_code(scanned)
        try:
            return normalise_card_code(scanned, self.settings.card_prefix)
        except CardCodeError as exc:
            raise NotFound("unknown_card", f"No loyalty card has that code: {exc}") from None

    def _signed_card_code(self, payload: str) -> str:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from drivers.cards import CardSignatureError, verify_card

        keys = [Ed25519PublicKey.from_public_bytes(k) for k in self.settings.card_public_keys]
        if not keys:
            raise NotFound(
                "unknown_card",
                "That is a signed digital card, and this till holds no card key to check it "
                "(set [shop] card_public_keys).",
            )
        try:
            return verify_card(payload, keys)
        except CardSignatureError as exc:
            raise NotFound("unknown_card", f"That digital card is not accepted: {exc}.") from None

    def _card_customer(self, tx: Tx, scanned: str, *, for_write: bool) -> tuple[str, str]:
        code, row = self._card_row(tx, scanned, for_write=for_write)
        return code, row.customer_id

    def _card_row(self, tx: Tx, scanned: str, *, for_write: bool) -> tuple[str, CardRow]:
        code = self.normalise_scan(scanned)
        row = tx.card(code)
        if row is None:
            raise NotFound("unknown_card", f"No loyalty card has the code {code}.")
        if for_write and row.status != "active":
            raise DomainError(
                "card_blocked", f"The card {code} is blocked: {row.reason or 'no reason given'}."
            )
        return code, row

    def _new_card_code(self, tx: Tx) -> str:
        # Serials below 10**11 start with 0: typed without the prefix, the 13 digits (which
        # pass Luhn by construction) lie outside every payment network's range.
        while True:
            code = make_card_code(self.settings.card_prefix, secrets.randbelow(10**11))
            if tx.card(code) is None:
                return code

    def _preset_card_code(self, tx: Tx, scanned: str) -> str:
        """A pre-printed card handed out at enrolment: valid, and not anybody's yet."""
        code = self.normalise_scan(scanned)
        if tx.card(code) is not None:
            raise Conflict("card_in_use", f"The card {code} already belongs to a customer.")
        return code

    def _event(self, kind: Kind, at: datetime, customer_id: str | None, **kw: Any) -> Event:
        return Event(uuid7(), kind, self.settings.terminal_id, at, customer_id, **kw)

    # -- enrol and cards ------------------------------------------------------------------
    def enrol(
        self, profile: Profile, at: datetime | None = None, card_code: str | None = None
    ) -> dict[str, Any]:
        """A new customer with a new card (or the pre-printed ``card_code``) and welcome gifts."""
        _refuse_card_data(
            "customer's details",
            [
                profile.name,
                profile.email,
                profile.phone,
                profile.referral_code,
                card_code,
                *profile.tags,
                *profile.consents,
            ],
        )
        when = self.resolve_at(at)
        referral = self.programs.of(ReferralProgram)
        if profile.referral_code and not referral:
            raise DomainError(
                "unknown_referral_code", "Referral codes are not enabled in this shop."
            )
        customer_id = uuid7()
        postings: list[Posting] = []
        welcome: dict[str, int] = {}
        for gift in self.programs.welcomes:
            target = self.programs.get(gift.points_program)
            assert isinstance(target, PointsProgram)
            expires = when + timedelta(days=target.expiry_days) if target.expiry_days else None
            if gift.points:
                postings.append(Posting.credit(target.id, Unit.POINTS, gift.points, expires))
                welcome[target.id] = welcome.get(target.id, 0) + gift.points
        data: dict[str, Any] = {"profile": _profile_json(profile)}
        if referral:
            data["referral_code"] = referral_code_of(customer_id)
        with self.ledger.transaction() as tx:
            extra: list[Event] = []
            if profile.referral_code:
                program = referral[0]
                referrer = self._referrer(tx, profile)
                data["profile"]["referred_by"] = referrer
                if program.trigger is ReferralTrigger.ENROL:
                    target = self.programs.get(program.points_program)
                    assert isinstance(target, PointsProgram)
                    if program.new_customer_points:
                        postings.append(
                            Posting.credit(
                                target.id,
                                Unit.POINTS,
                                program.new_customer_points,
                                _expiry_of(target, when),
                            )
                        )
                        welcome[target.id] = welcome.get(target.id, 0) + program.new_customer_points
                    extra.append(self._referrer_event(tx, program, referrer, customer_id, when))
                else:
                    postings.append(Posting(f"{program.id}:pending", Unit.COUNT, 1))
            code = self._preset_card_code(tx, card_code) if card_code else self._new_card_code(tx)
            tx.append(
                [
                    self._event(
                        Kind.CUSTOMER_ENROLLED,
                        when,
                        customer_id,
                        postings=tuple(postings),
                        data=data,
                    ),
                    self._event(Kind.CARD_ISSUED, when, customer_id, data={"code": code}),
                    *extra,
                ]
            )
            state = tx.state(customer_id)
        return {
            "customer_id": customer_id,
            "card": {"code": code, "status": "active"},
            "welcome": welcome,
            "referral_code": data.get("referral_code"),
            "balances": self._balances(state, when),
            "tier": catalog.tier_of(self.programs, state, when),
        }

    def _referrer(self, tx: Tx, profile: Profile) -> str:
        """The customer whose referral code ``profile`` carries; self-referral refused.

        A referral code is only accepted at enrolment, by a customer who does not exist
        yet, so a referral loop (A refers B refers A) cannot be formed; the same email or
        phone as the referrer's counts as referring oneself.
        """
        code = (profile.referral_code or "").strip().upper()
        referrer = projections.referrer_of(tx.conn, code)
        if referrer is None:
            raise DomainError(
                "unknown_referral_code", f"No customer has the referral code {code!r}."
            )
        row = tx.customer(referrer)
        theirs = json.loads(row.profile) if row is not None else {}
        for key in ("email", "phone"):
            mine = getattr(profile, key)
            if mine and theirs.get(key) and mine.strip().lower() == theirs[key].strip().lower():
                raise DomainError("self_referral", "A customer cannot refer themselves.")
        return referrer

    def _referrer_event(
        self, tx: Tx, program: ReferralProgram, referrer: str, referred: str, when: datetime
    ) -> Event:
        """The referrer's reward, growing with their earlier successful referrals."""
        earlier = tx.state(referrer).counter(program.id, Unit.COUNT)
        points = program.referrer_reward(earlier)
        target = self.programs.get(program.points_program)
        assert isinstance(target, PointsProgram)
        postings = [Posting(program.id, Unit.COUNT, 1)]
        if points:
            postings.append(
                Posting.credit(target.id, Unit.POINTS, points, _expiry_of(target, when))
            )
        return self._event(
            Kind.REFERRAL_REWARDED,
            when,
            referrer,
            postings=tuple(postings),
            data={"referred": referred, "points": points, "reason": "referral"},
        )

    def issue_card(self, customer_id: str, at: datetime | None = None) -> dict[str, Any]:
        when = self.resolve_at(at)
        with self.ledger.transaction() as tx:
            if tx.customer(customer_id) is None:
                raise NotFound("unknown_customer", f"No customer has the id {customer_id}.")
            code = self._new_card_code(tx)
            tx.append([self._event(Kind.CARD_ISSUED, when, customer_id, data={"code": code})])
        return {"customer_id": customer_id, "card": {"code": code, "status": "active"}}

    def block_card(self, scanned: str, reason: str, at: datetime | None = None) -> dict[str, Any]:
        _refuse_card_data("reason", [reason])
        when = self.resolve_at(at)
        with self.ledger.transaction() as tx:
            code, customer_id = self._card_customer(tx, scanned, for_write=True)
            tx.append(
                [
                    self._event(
                        Kind.CARD_BLOCKED, when, customer_id, data={"code": code, "reason": reason}
                    )
                ]
            )
        return {
            "customer_id": customer_id,
            "card": {"code": code, "status": "blocked", "reason": reason},
        }

    def replace_card(
        self, scanned: str, reason: str = "replaced", at: datetime | None = None
    ) -> dict[str, Any]:
        """Block the old card and issue a new one to the same customer, in one transaction."""
        _refuse_card_data("reason", [reason])
        when = self.resolve_at(at)
        with self.ledger.transaction() as tx:
            old, customer_id = self._card_customer(tx, scanned, for_write=True)
            new = self._new_card_code(tx)
            tx.append(
                [
                    self._event(
                        Kind.CARD_BLOCKED, when, customer_id, data={"code": old, "reason": reason}
                    ),
                    self._event(
                        Kind.CARD_ISSUED, when, customer_id, data={"code": new, "replaces": old}
                    ),
                ]
            )
        return {
            "customer_id": customer_id,
            "card": {"code": new, "status": "active"},
            "replaced": old,
        }

    # -- look-up --------------------------------------------------------------------------
    def lookup(self, scanned: str, at: datetime | None = None) -> dict[str, Any]:
        when = self.read_at(at)
        with self.ledger.reader() as tx:
            code, card = self._card_row(tx, scanned, for_write=False)
            customer_id = card.customer_id
            customer = tx.customer(customer_id)
            state = tx.state(customer_id)
            issued = projections.open_coupons(tx.conn, customer_id)
        return {
            "card": {"code": code, "status": card.status, "reason": card.reason},
            "customer": _customer_json(customer),
            "balances": self._balances(state, when),
            "tier": catalog.tier_of(self.programs, state, when),
            "rewards": self._rewards(state, when, issued),
            "expiring_soon": self._expiring(state, when),
        }

    def customer(
        self, customer_id: str, *, limit: int = 20, before: int | None = None
    ) -> dict[str, Any]:
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise DomainError("invalid_limit", "`limit` must be a whole number from 1 to 1000.")
        if before is not None and (type(before) is not int or not 1 <= before <= 2**62):
            raise DomainError("invalid_before", "`before` must be a position from the history.")
        when = self.now()
        with self.ledger.reader() as tx:
            row = tx.customer(customer_id)
            if row is None:
                raise NotFound("unknown_customer", f"No customer has the id {customer_id}.")
            state = tx.state(customer_id)
            cards = tx.cards_of(customer_id)
            page = tx.history(customer_id, limit=limit + 1, before=before)
            issued = projections.open_coupons(tx.conn, customer_id)
        more = len(page) > limit
        page = page[:limit]
        return {
            "customer": _customer_json(row),
            "cards": [{"code": c.code, "status": c.status, "reason": c.reason} for c in cards],
            "balances": self._balances(state, when),
            "tier": catalog.tier_of(self.programs, state, when),
            "rewards": self._rewards(state, when, issued),
            "expiring_soon": self._expiring(state, when),
            "history": [_history_json(pos, ev) for pos, ev in page],
            "next_before": page[-1][0] if more and page else None,
        }

    # -- quote and commit -----------------------------------------------------------------
    @staticmethod
    def _refuse_payment_data(request: SaleRequest) -> None:
        """No field of a basket may carry payment-card data: it would be stored or echoed."""
        texts = {request.receipt_id or "", *request.basket.codes}
        texts.update(line.sku for line in request.basket.lines)
        texts.update(line.category or "" for line in request.basket.lines)
        if any(_carries_payment_card(text) for text in texts):
            raise DomainError(
                "payment_card_rejected",
                "The basket carries payment card data, which is never stored; nothing was done.",
            )

    def quote(self, request: SaleRequest) -> dict[str, Any]:
        self._refuse_payment_data(request)
        when = self.read_at(request.at)
        with self.ledger.reader() as tx:
            customer_id = None
            state = None
            if request.card is not None:
                _, customer_id = self._card_customer(tx, request.card, for_write=True)
                state = tx.state(customer_id)
            ctx = self._context(tx, customer_id, request.basket)
            issued = projections.open_coupons(tx.conn, customer_id) if customer_id else []
            if state is not None:
                for lot_event in self._expiries(state, when):
                    state.apply(lot_event)
            result = engine.quote(request.basket, state, self.programs, when, ctx)
            if customer_id is not None and result.postings:
                # The quote refuses what the commit would refuse (the price shown must hold).
                self._check_offline_limits(tx, customer_id, result, when)
        return self._sale_response(
            request.receipt_id,
            result,
            state,
            customer_id,
            when,
            issued=issued,
            quote=True,
        )

    def commit(self, request: SaleRequest) -> dict[str, Any]:
        if not request.receipt_id:
            raise DomainError("receipt_id_required", "A commit needs the POS's `receipt_id`.")
        self._refuse_payment_data(request)
        digest = request_hash(request.raw)
        key = f"sale:{request.receipt_id}"
        done = self.ledger.receipt(key)  # a retry answers without queueing for the write lock
        if done is not None:
            return self._replay(done, digest)
        when = self.resolve_at(request.at)
        with self.ledger.transaction() as tx:
            done = tx.receipt(key)  # a racing writer may have committed it meanwhile
            if done is not None:
                return self._replay(done, digest)
            customer_id = None
            state = None
            stored: dict[str, CustomerState] = {}
            new_events: list[Event] = []
            if request.card is not None:
                _, customer_id = self._card_customer(tx, request.card, for_write=True)
                state = tx.state(customer_id)
                stored = {customer_id: state.copy()}
                new_events.extend(self._expiries_to_record(tx, state, when))
            ctx = self._context(tx, customer_id, request.basket)
            result = engine.quote(request.basket, state, self.programs, when, ctx)
            if customer_id is not None and result.postings:
                self._check_offline_limits(tx, customer_id, result, when)
            new_coupons = self._issue_coupons(result, customer_id, when)
            sale = self._event(
                Kind.SALE_COMMITTED,
                when,
                customer_id,
                key=request.receipt_id,
                postings=tuple(result.postings),
                data={
                    "receipt_id": request.receipt_id,
                    "request_hash": digest,
                    "lines": [line.to_json() for line in result.lines],
                    "earned": dict(result.earned),
                    "redeemed": dict(result.redeemed),
                    **({"spend": dict(result.spend)} if result.spend else {}),
                    **({"uses": dict(result.uses)} if result.uses else {}),
                    **({"coupons": new_coupons} if new_coupons else {}),
                    **({"issued": list(result.issued)} if result.issued else {}),
                },
            )
            new_events.append(sale)
            if result.referral is not None and customer_id is not None:
                program = self.programs.get(result.referral)
                assert isinstance(program, ReferralProgram)
                row = tx.customer(customer_id)
                referrer = json.loads(row.profile).get("referred_by") if row else None
                if referrer:
                    new_events.append(
                        self._referrer_event(tx, program, referrer, customer_id, when)
                    )
            tx.append(new_events, stored)
            if state is not None:
                state.apply(sale)
            issued = projections.open_coupons(tx.conn, customer_id) if customer_id else []
            response = self._sale_response(
                request.receipt_id, result, state, customer_id, when, issued=issued
            )
            tx.set_response(key, response)
        return response

    def _issue_coupons(
        self, result: engine.Quote, customer_id: str | None, when: datetime
    ) -> list[dict[str, Any]]:
        """Codes for the reward coupons the engine issued (signed now: the serial is random)."""
        out = []
        for item in result.issued:
            if item["kind"] != "coupon" or customer_id is None:
                continue
            program = self.programs.get(item["program"])
            assert isinstance(program, CouponProgram)
            entry = self._sign_coupon(program, customer_id, when)
            item.update(code=entry["code"], expires_at=entry["expires_at"])
            out.append(entry)
        return out

    def _sign_coupon(
        self, program: CouponProgram, customer_id: str | None, when: datetime
    ) -> dict[str, Any]:
        signer = self._keys()[0]
        coupon, code = coupons.make_code(
            signer,
            program.id,
            secrets.token_bytes(8),
            coupons.expiry_day(when, program.valid_days),
            customer_id,
        )
        return {
            "serial": coupon.serial,
            "program": program.id,
            "code": code,
            "expires_at": coupon.expires_at.isoformat(),
        }

    def issue_coupon(
        self,
        program_id: str,
        customer_id: str | None = None,
        at: datetime | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """A single-use coupon issued by the till (to a customer, or to the bearer).
        ``request_id``: the POS's idempotency key (a retry answers the first coupon)."""
        retry = _Retry(
            self, Kind.COUPON_ISSUED, request_id, program=program_id, customer_id=customer_id, at=at
        )
        if (done := retry.answered()) is not None:
            return done
        when = self.resolve_at(at)
        program = self.programs.get(program_id)
        if not isinstance(program, CouponProgram):
            raise DomainError("unknown_program", f"There is no coupon program {program_id!r}.")
        with self.ledger.transaction() as tx:
            if (done := retry.answered(tx)) is not None:
                return done
            if customer_id is not None and tx.customer(customer_id) is None:
                raise NotFound("unknown_customer", f"No customer has the id {customer_id}.")
            entry = self._sign_coupon(program, customer_id, when)
            tx.append(
                [
                    self._event(
                        Kind.COUPON_ISSUED,
                        when,
                        customer_id,
                        data={"coupons": [entry], **retry.data},
                    )
                ]
            )
            response = {"customer_id": customer_id, "label": program.label, **entry}
            retry.keep(tx, response)
        return response

    def wallet_payout(
        self,
        customer_id: str,
        program_id: str,
        amount: int,
        at: datetime | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Pay wallet money out in cash: only for a cashback program with ``payout``.
        ``request_id``: the POS's idempotency key (a retry answers the first payout)."""
        retry = _Retry(
            self,
            Kind.WALLET_PAID_OUT,
            request_id,
            customer_id=customer_id,
            program=program_id,
            amount=amount,
            at=at,
        )
        if (done := retry.answered()) is not None:
            return done
        when = self.resolve_at(at)
        program = self.programs.get(program_id)
        if not isinstance(program, CashbackProgram):
            raise DomainError("unknown_program", f"There is no wallet {program_id!r}.")
        if not program.payout:
            raise DomainError(
                "payout_not_allowed", f"The {program.label} can be spent, not paid out."
            )
        if amount <= 0:
            raise DomainError("invalid_amount", "A payout must be a positive amount.")
        with self.ledger.transaction() as tx:
            if (done := retry.answered(tx)) is not None:
                return done
            if tx.customer(customer_id) is None:
                raise NotFound("unknown_customer", f"No customer has the id {customer_id}.")
            held = tx.state(customer_id).wallet(program.id)
            if amount > held:
                raise DomainError(
                    "insufficient_funds",
                    f"The {program.label.lower()} holds {format_minor(max(held, 0))}.",
                )
            self._check_offline_spend(tx, customer_id, 0, amount, when)
            tx.append(
                [
                    self._event(
                        Kind.WALLET_PAID_OUT,
                        when,
                        customer_id,
                        postings=(Posting(program.id, Unit.MONEY, -amount),),
                        data={"amount": amount, "reason": "payout", **retry.data},
                    )
                ]
            )
            state = tx.state(customer_id)
            response = {
                "customer_id": customer_id,
                "paid_out": amount,
                "balances": self._balances(state, when),
            }
            retry.keep(tx, response)
        return response

    def _check_offline_limits(
        self, tx: Tx, customer_id: str, result: engine.Quote, at: datetime
    ) -> None:
        """Bound what tills can overspend between syncs (DESIGN invariant 8).

        Applies only to a till that syncs with a server and cannot reach it now: a
        stand-alone till's ledger is the one truth, so nothing can be overspent. Days are
        UTC days of the sale's ``at``.
        """
        points = sum(-p.delta for p in result.postings if p.unit is Unit.POINTS and p.delta < 0)
        wallet = sum(-p.delta for p in result.postings if p.unit is Unit.MONEY and p.delta < 0)
        self._check_offline_spend(tx, customer_id, points, wallet, at)

    def _check_offline_spend(
        self, tx: Tx, customer_id: str, points: int, wallet: int, at: datetime
    ) -> None:
        """``points`` redeemed and ``wallet`` money paid out of a wallet (sale or payout)
        within what is left of today's offline limits, per card and per till."""
        if (points == 0 and wallet == 0) or not self.syncs(tx) or self.online():
            return
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        lo, hi = start.isoformat(), (start + timedelta(days=1)).isoformat()
        limits = self.settings.offline
        card = tx.spent_between(lo, hi, customer_id)  # (points, wallet money)
        till = tx.spent_between(lo, hi)
        rows: tuple[tuple[int, int, int, int, Callable[[int], str], str], ...] = (
            (points, limits.points_per_card_per_day, limits.points_per_terminal_per_day, 0,
             str, "points can be redeemed"),
            (wallet, limits.wallet_per_card_per_day, limits.wallet_per_terminal_per_day, 1,
             format_minor, "can be paid from the wallet"),
        )  # fmt: skip
        for wanted, per_card, per_till, i, amount, what in rows:
            allowed = max(0, min(per_card - card[i], per_till - till[i]))
            if wanted > allowed:
                raise DomainError(
                    "offline_limit_exceeded",
                    f"The till is offline: at most {amount(allowed)} more {what} today on this "
                    "card at this till.",
                )

    def syncs(self, tx: Tx | None = None) -> bool:
        """Whether this till shares its customers with other tills: sync is enabled in its
        configuration, or it is paired with a server (a separate ``pos-loyalty sync``
        process may sync it while ``[sync] enabled`` is false for this process)."""
        if self.settings.sync.enabled or self._paired:
            return True
        if tx is None:
            with self.ledger.reader() as reading:
                return self.syncs(reading)
        self._paired = tx.paired()
        return self._paired

    def recently_synced(self) -> bool:
        """Whether the sync worker of another process (``pos-loyalty sync``) last reached
        the server, recently enough to call the till online (the worker's own rule: its
        last round succeeded, within two intervals and 30 s). Without its status file, a
        recent successful pull recorded in the ledger counts."""
        status = read_status(self.settings.data_dir)
        if status is not None:
            last = status.last_success if status.online else None
        else:
            try:
                with self.ledger.reader() as tx:
                    last = tx.last_pull_at()
            except Exception:  # noqa: BLE001 - unknown means offline: the limits apply
                return False
        if last is None:
            return False
        age = (self.now() - utc(last)).total_seconds()
        return -60 <= age <= 2 * self.settings.sync.interval_seconds + 30

    def _replay(self, done: Any, digest: str) -> dict[str, Any]:
        if done.request_hash != digest:
            raise Conflict(
                "receipt_conflict",
                "This receipt id was already used for a different request; nothing was written.",
            )
        if not done.response:  # learnt through sync: the answer was given at another till
            raise Conflict(
                "receipt_committed_elsewhere",
                "This receipt was committed at another till; its answer is kept there.",
            )
        return dict(done.response)

    def _expiries(self, state: CustomerState, at: datetime) -> list[Event]:
        out = []
        for program, account in sorted(state.points.items()):
            for lot in account.due(at):
                assert lot.expires_at is not None
                out.append(
                    Event(
                        expiry_event_id(lot.lot_id),
                        Kind.POINTS_EXPIRED,
                        self.settings.terminal_id,
                        lot.expires_at,
                        state.customer_id,
                        postings=(Posting(program, Unit.POINTS, -lot.remaining, lot=lot.lot_id),),
                        data={"lot": lot.lot_id},
                    )
                )
        return out

    def _expiries_to_record(self, tx: Tx, state: CustomerState, at: datetime) -> list[Event]:
        """Expiry events for lots due at ``at``, applied to ``state``; one event id per lot."""
        out = []
        for ev in self._expiries(state, at):
            if not tx.has_event(ev.id):
                out.append(ev)
            state.apply(ev)
        return out

    def _sale_response(
        self,
        receipt_id: str | None,
        result: engine.Quote,
        state: CustomerState | None,
        customer_id: str | None,
        at: datetime | None = None,
        *,
        issued: list[dict[str, Any]] | None = None,
        quote: bool = False,
    ) -> dict[str, Any]:
        when = at or self.now()
        return {
            "receipt_id": receipt_id,
            "customer_id": customer_id,
            "currency": self.programs.currency,
            "total_before": result.total_before,
            "total_discount": result.total_discount,
            "total": result.total,
            "lines": [
                {
                    "sku": ln.sku,
                    "qty": ln.qty,
                    "unit_price": ln.unit_price,
                    "discount": ln.discount,
                    "total": ln.total,
                    **({"gift": ln.gift} if ln.gift else {}),
                }
                for ln in result.lines
            ],
            "discounts": [
                {"program": d.program, "line": d.line, "amount": d.amount, "label": d.label}
                for d in result.discounts
            ],
            "earned": dict(result.earned),
            "redeemed": dict(result.redeemed),
            "balances": self._balances(state, when) if state is not None else {},
            "tier": result.tier,
            "rewards": self._rewards(state, when, issued or []) if state is not None else [],
            "issued": [
                {
                    k: v
                    for k, v in item.items()
                    if not (quote and k == "code" and item["kind"] == "coupon")
                }
                for item in result.issued
            ],
            "nudges": list(result.nudges),
            "receipt_text": engine.receipt_text(self.programs, state, result)
            if state is not None
            else [str(item["text"]) for item in result.issued],
        }

    # -- refunds --------------------------------------------------------------------------
    def refund(self, request: RefundRequest) -> dict[str, Any]:
        digest = request_hash(request.raw)
        key = f"refund:{request.refund_id}"
        done = self.ledger.receipt(key)  # a retry answers without queueing for the write lock
        if done is not None:
            return self._replay(done, digest)
        when = self.resolve_at(request.at)
        with self.ledger.transaction() as tx:
            done = tx.receipt(key)
            if done is not None:
                return self._replay(done, digest)
            sale_receipt = tx.receipt(f"sale:{request.receipt_id}")
            if sale_receipt is None:
                raise NotFound(
                    "unknown_receipt", f"No sale has the receipt id {request.receipt_id!r}."
                )
            sale = tx.event(sale_receipt.event_id)
            assert sale is not None
            if when < sale.at:
                if request.at is not None:
                    raise DomainError(
                        "refund_before_sale",
                        "A refund cannot be dated before the sale it refunds.",
                    )
                # Undated: the sale was dated by a POS clock ahead of the till's (within
                # the allowed skew); the refund takes the sale's moment, not a refusal.
                when = sale.at
            customer_id = sale.customer_id
            new_events: list[Event] = []
            expired: dict[str, int] = {}
            if customer_id is not None:
                # Expiries due by now are recorded first, as a commit would; points of this
                # sale that already expired are not taken back a second time.
                new_events = self._expiries_to_record(tx, tx.state(customer_id), when)
                recording = {e.id: e for e in new_events}
                for program in self.programs.points:
                    expiry_id = expiry_event_id(lot_id(sale.id, program.id))
                    gone = recording.get(expiry_id) or tx.event(expiry_id)
                    if gone is not None:
                        expired[program.id] = -sum(p.delta for p in gone.postings)
            lines = [
                engine.LineResult.from_json(i, raw) for i, raw in enumerate(sale.data["lines"])
            ]
            units = refunds.units_to_refund(lines, sale_receipt.refunded, request.lines)
            result = refunds.reverse(
                sale_event_id=sale.id,
                lines=lines,
                earned=sale.data.get("earned", {}),
                already=sale_receipt.refunded,
                units=units,
                programs=self.programs,
                at=when,
                spend=sale.data.get("spend", {}),
                expired=expired,
                sale_lots={p.program: p.lot for p in sale.postings if p.delta > 0 and p.lot},
                stamps_reversed=self._stamps_reversed(tx, sale, customer_id)
                if sale_receipt.refunded
                else None,
            )
            everything = all(
                sale_receipt.refunded.get(ln.index, 0) + units.get(ln.index, 0) >= ln.qty
                for ln in lines
            )
            withdrawal: refunds.Withdrawal | None = None
            referrer_events: list[Event] = []
            if everything and customer_id is not None:
                withdrawal = self._withdrawal(tx, sale, customer_id, expired)
                if withdrawal.referral is not None:
                    referrer_events = self._referral_reversal(
                        tx, withdrawal.referral, customer_id, when, request.refund_id
                    )
            postings = tuple(result.postings) if customer_id is not None else ()
            if withdrawal is not None:
                postings += tuple(withdrawal.postings)
            ev = self._event(
                Kind.REFUND_COMMITTED,
                when,
                customer_id,
                key=request.refund_id,
                postings=postings,
                data={
                    "refund_id": request.refund_id,
                    "receipt_id": request.receipt_id,
                    "request_hash": digest,
                    "units": {str(i): n for i, n in sorted(units.items())},
                    "amount": result.amount,
                    **({"uses": withdrawal.uses} if withdrawal and withdrawal.uses else {}),
                },
            )
            tx.append([*new_events, ev, *referrer_events])
            balances = self._balances(tx.state(customer_id), when) if customer_id else {}
            response = {
                "refund_id": request.refund_id,
                "receipt_id": request.receipt_id,
                "customer_id": customer_id,
                "amount": result.amount,
                "lines": [{"sku": lines[i].sku, "qty": n} for i, n in sorted(units.items())],
                "reversed": {**result.reversed_points, **result.reversed_stamps},
                "returned": {**result.returned_points, **result.returned_stamps},
                # What the sale handed out for the whole purchase, taken back with its last
                # unit: unused next-visit offers and reward coupons, a referral reward.
                "withdrawn": {
                    "offers": withdrawal.offers if withdrawal else [],
                    "coupons": withdrawal.coupons if withdrawal else [],
                    "referral": withdrawal.referral if withdrawal else None,
                },
                "balances": balances,
                "tier": catalog.tier_of(self.programs, tx.state(customer_id), when)
                if customer_id
                else None,
            }
            tx.set_response(key, response)
        return response

    def _stamps_reversed(self, tx: Tx, sale: Event, customer_id: str | None) -> dict[str, int]:
        """Stamps earlier refunds of ``sale`` took back, per per-visit stamp card."""
        visit = {c.id for c in self.programs.stamp_cards if c.per is StampBasis.VISIT}
        if customer_id is None or not visit:
            return {}
        out: dict[str, int] = {}
        for ev in tx.events_of(customer_id, Kind.REFUND_COMMITTED):
            if ev.data.get("receipt_id") != sale.data.get("receipt_id"):
                continue
            for p in ev.postings:
                if p.program in visit and p.unit is Unit.STAMPS and p.delta < 0:
                    out[p.program] = out.get(p.program, 0) - p.delta
        return out

    def _withdrawal(
        self, tx: Tx, sale: Event, customer_id: str, expired: Mapping[str, int]
    ) -> refunds.Withdrawal:
        state = tx.state(customer_id)
        offer_lots = {
            offer.id: {
                lot.lot_id: lot.remaining
                for lot in state.lots_of(offer.id, Unit.OFFER).lots.values()
            }
            for offer in self.programs.of(NextVisitProgram)
        }
        keys = [f"coupon:{c['serial']}" for c in sale.data.get("coupons") or ()]
        return refunds.withdraw_rewards(
            sale_event_id=sale.id,
            sale_postings=sale.postings,
            sale_data=sale.data,
            offer_lots=offer_lots,
            usage=projections.usage_counts(tx.conn, keys) if keys else {},
            programs=self.programs,
            expired=expired,
        )

    def _referral_reversal(
        self, tx: Tx, program_id: str, referred: str, when: datetime, refund_id: str
    ) -> list[Event]:
        """The referrer's reward for ``referred`` taken back (their first purchase was
        refunded in full): the newest reward not yet taken back, if this till holds it."""
        program = self.programs.get(program_id)
        assert isinstance(program, ReferralProgram)
        row = tx.customer(referred)
        referrer = json.loads(row.profile).get("referred_by") if row else None
        if not referrer:
            return []
        held = [
            e
            for e in tx.events_of(referrer, Kind.REFERRAL_REWARDED)
            if e.data.get("referred") == referred
        ]
        rewards = [e for e in held if "refund_id" not in e.data]
        if len(rewards) <= len(held) - len(rewards):
            return []  # not held here yet (recorded elsewhere, not pulled), or taken back
        reward = rewards[-1]  # rewards and take-backs alternate: the newest is not taken back
        postings = [Posting(program.id, Unit.COUNT, -1)]  # re-opened: counted once again
        credit = next((p for p in reward.postings if p.unit is Unit.POINTS and p.delta > 0), None)
        points = 0
        if credit is not None:
            lot = credit.lot or lot_id(reward.id, credit.program)
            expiry = tx.event(expiry_event_id(lot))
            gone = -sum(p.delta for p in expiry.postings) if expiry is not None else 0
            points = max(0, credit.delta - gone)  # what expired is not taken twice
            if points:
                postings.append(Posting(credit.program, Unit.POINTS, -points, lot=lot))
        return [
            self._event(
                Kind.REFERRAL_REWARDED,
                when,
                referrer,
                postings=tuple(postings),
                data={
                    "referred": referred,
                    "points": -points,
                    "reason": "referral taken back: the first purchase was refunded",
                    "refund_id": refund_id,
                },
            )
        ]

    # -- adjustments ----------------------------------------------------------------------
    def adjust(
        self,
        customer_id: str,
        program_id: str,
        delta: int,
        reason: str,
        at: datetime | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """A manual change of a balance, with its reason. ``request_id``: the POS's
        idempotency key (a retry answers the first adjustment)."""
        retry = _Retry(
            self,
            Kind.ACCOUNT_ADJUSTED,
            request_id,
            customer_id=customer_id,
            program=program_id,
            delta=delta,
            reason=reason,
            at=at,
        )
        if (done := retry.answered()) is not None:
            return done
        when = self.resolve_at(at)
        program = self.programs.get(program_id)
        if isinstance(program, PointsProgram):
            unit = Unit.POINTS
        elif isinstance(program, StampCardProgram):
            unit = Unit.STAMPS
        else:
            raise DomainError(
                "unknown_program", f"There is no points or stamps program {program_id!r}."
            )
        if type(delta) is not int or delta == 0 or abs(delta) > 1_000_000_000:
            raise DomainError(
                "invalid_adjustment",
                "An adjustment must change the balance by a whole number up to 1,000,000,000.",
            )
        if not reason.strip():
            raise DomainError("reason_required", "An adjustment needs a reason.")
        _refuse_card_data("reason", [reason])
        expires = None
        if isinstance(program, PointsProgram) and delta > 0 and program.expiry_days:
            expires = when + timedelta(days=program.expiry_days)
        with self.ledger.transaction() as tx:
            if (done := retry.answered(tx)) is not None:
                return done
            if tx.customer(customer_id) is None:
                raise NotFound("unknown_customer", f"No customer has the id {customer_id}.")
            state = tx.state(customer_id)
            events = self._expiries_to_record(tx, state, when)
            events.append(
                self._event(
                    Kind.ACCOUNT_ADJUSTED,
                    when,
                    customer_id,
                    postings=(
                        Posting.credit(program_id, unit, delta, expires)
                        if unit is Unit.POINTS and delta > 0
                        else Posting(program_id, unit, delta),
                    ),
                    data={"reason": reason, **retry.data},
                )
            )
            tx.append(events)
            state = tx.state(customer_id)
            response = {"customer_id": customer_id, "balances": self._balances(state, when)}
            retry.keep(tx, response)
        return response

    # -- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        with self.ledger.reader() as tx:
            seq, digest = tx.head()
        out = self.health_without_ledger()
        out["events_waiting"] = seq
        out["head"] = {"seq": seq, "hash": digest.hex()}
        return out

    def health_without_ledger(self) -> dict[str, Any]:
        """What ``health`` tells without reading the ledger: all a monitor can be told once
        the ledger is refused (damaged, unavailable)."""
        return {
            "terminal_id": self.settings.terminal_id,
            "store_id": self.settings.store_id,
            "online": False,
            # SQLite's check of the whole file, run in the background by the agent and the
            # terminal (``Ledger.start_file_check``); once it finds damage, ``health`` and
            # every other call raise ``LedgerDamaged`` (the API's 503 ``ledger_damaged``,
            # whose body carries this dict).
            "ledger_check": self.ledger.file_check.as_dict(),
            "programs": {
                "version": self.programs_version,
                "source": "server" if self.programs_version else "config file",
            },
        }

    # -- views ----------------------------------------------------------------------------
    def _balances(self, state: CustomerState, at: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for program in self.programs.programs:
            if isinstance(program, StampCardProgram):
                out[program.id] = {
                    "kind": "stamps",
                    "balance": state.stamp_count(program.id),
                    "required": program.required,
                }
            elif isinstance(program, PointsProgram):
                account = state.points.get(program.id)
                balance = account.spendable(at) if account else 0
                out[program.id] = {
                    "kind": "points",
                    "balance": balance,
                    "value": max(balance, 0) * program.point_value,
                }
            elif isinstance(program, CashbackProgram):
                out[program.id] = {
                    "kind": "wallet",
                    "balance": state.wallet(program.id),
                    "payout": program.payout,
                }
        return out

    def _rewards(
        self, state: CustomerState, at: datetime, issued: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for card in self.programs.stamp_cards:
            count = max(state.stamp_count(card.id), 0) // card.required
            if count:
                out.append({"program": card.id, "label": card.reward_label, "count": count})
        for offer in self.programs.of(NextVisitProgram):
            account = state.lotted.get((offer.id, Unit.OFFER))
            if account is None or account.spendable(at) <= 0:
                continue
            live = [
                lot.expires_at
                for lot in account.lots.values()
                if lot.expires_at is not None and lot.expires_at > at
            ]
            out.append(
                {
                    "program": offer.id,
                    "label": offer.label,
                    "count": account.spendable(at),
                    "valid_until": min(live).isoformat() if live else None,
                }
            )
        for coupon in issued or []:
            if datetime.fromisoformat(coupon["expires_at"]) < at:
                continue
            program = self.programs.get(coupon["program"])
            out.append(
                {
                    "program": coupon["program"],
                    "label": program.label if program is not None else coupon["program"],
                    "count": 1,
                    "code": coupon["code"],
                    "expires_at": coupon["expires_at"],
                }
            )
        return out

    def _expiring(self, state: CustomerState, at: datetime) -> list[dict[str, Any]]:
        out = []
        horizon = at + timedelta(days=EXPIRING_SOON_DAYS)
        for program in self.programs.points:
            account = state.points.get(program.id)
            if account is None:
                continue
            # Filtered before sorting (the same order: a filter keeps the sorted order).
            soon = [
                lot
                for lot in account.lots.values()
                if lot.expires_at is not None and at < lot.expires_at <= horizon
            ]
            for lot in sorted(soon, key=lambda lot: lot.sort_key()):
                assert lot.expires_at is not None
                out.append(
                    {
                        "program": program.id,
                        "points": lot.remaining,
                        "expires_at": lot.expires_at.isoformat(),
                    }
                )
        return out


def _pinned(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with the program set that was current when it started, whatever
    ``use_programs`` does meanwhile in another thread (the sync worker): one sale is never
    computed with parts of two sets. Thread-local, so nested calls keep the outer pin."""

    @functools.wraps(method)
    def command(self: Service, *args: Any, **kwargs: Any) -> Any:
        pin = self._pin
        if getattr(pin, "programs", None) is not None:
            return method(self, *args, **kwargs)
        pin.programs = self._programs
        try:
            return method(self, *args, **kwargs)
        finally:
            pin.programs = None

    return command


for _name, _member in list(vars(Service).items()):
    if not _name.startswith("_") and inspect.isfunction(_member) and _name != "use_programs":
        setattr(Service, _name, _pinned(_member))


def _profile_json(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": profile.name,
        "email": profile.email,
        "phone": profile.phone,
        "consents": dict(profile.consents),
    }
    if profile.tags:
        out["tags"] = sorted(set(profile.tags))
    return out


def _expiry_of(program: PointsProgram, at: datetime) -> datetime | None:
    return at + timedelta(days=program.expiry_days) if program.expiry_days else None


def referral_code_of(customer_id: str) -> str:
    """A customer's referral code: derived from the id, the same on every till."""
    digest = derived_id("referral", customer_id).replace("-", "").upper()
    return "R" + digest[:9]


def _customer_json(row: Any) -> dict[str, Any]:
    return {"id": row.customer_id, "enrolled_at": row.enrolled_at, **json.loads(row.profile)}


def _history_json(pos: int, ev: Event) -> dict[str, Any]:
    return {
        "position": pos,
        "event_id": ev.id,
        "kind": ev.kind.value,
        "at": ev.at.isoformat(),
        "terminal_id": ev.terminal_id,
        "key": ev.key,
        "changes": [
            {"program": p.program, "unit": p.unit.value, "delta": p.delta} for p in ev.postings
        ],
        **({"reason": ev.data["reason"]} if "reason" in ev.data else {}),
        **({"amount": ev.data["amount"]} if "amount" in ev.data else {}),
    }


def points_of(response: Mapping[str, Any], program: str) -> int:
    """Convenience for tests and the CLI: a program's balance in a response."""
    return int(response["balances"][program]["balance"])


__all__ = ["Profile", "RefundRequest", "SaleRequest", "Service"]
