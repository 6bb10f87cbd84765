"""The program catalog beyond stamps and points: tiers, promo codes, signed coupons,
next-visit offers, bundles, buy X get Y, cardholder offers, green actions, cashback wallets,
gifts, referrals and nudges. Called by ``engine.quote`` in the order its docstring gives.

Pure and integer-only: percentages are basis points (1500 = 15%), multipliers are percent
ratios (125 = x1.25); every percentage is truncated once per program per receipt and split
over lines by the largest-remainder rule (``money.allocate``). No line is ever discounted
below zero: every step takes at most what is left on a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import coupons
from .basket import Basket
from .errors import DomainError
from .events import Posting, Unit
from .money import allocate, format_minor
from .programs import (
    BuyXGetYProgram,
    CashbackProgram,
    ComboProgram,
    CouponProgram,
    Downgrade,
    GiftProgram,
    GreenProgram,
    MemberOfferProgram,
    NextVisitProgram,
    PointsProgram,
    ProgramSet,
    PromoCodeProgram,
    ReferralProgram,
    Target,
    TierLevel,
    TierProgram,
)
from .state import CustomerState, Lot

if TYPE_CHECKING:
    from .engine import LineResult, Quote

COMBO_SEARCH_NODES = 400  # bound on the bundle allocation search (see _best_bundles)


@dataclass(frozen=True)
class Context:
    """What the ledger and the till know beyond the customer's balances.

    Attributes:
      store_id: this till's store (for programs scoped to stores).
      tags: the customer's tags from the profile (for cardholder offers).
      usage: ledger-wide use counters: ``promo:<id>`` (uses of a promo code, all customers),
        ``coupon:<serial>`` (a coupon already redeemed), ``voucher:<gift id>`` (vouchers drawn).
      verifiers: public keys whose coupon signatures this till trusts.
    """

    store_id: str = ""
    tags: frozenset[str] = frozenset()
    usage: Mapping[str, int] = field(default_factory=dict)
    verifiers: tuple[coupons.Verifier, ...] = ()


@dataclass(frozen=True)
class AppliedCode:
    program: PromoCodeProgram | CouponProgram
    code: str
    coupon: coupons.Coupon | None = None


@dataclass(frozen=True)
class TierStatus:
    program: TierProgram
    index: int
    spend_before: int
    sale_amount: int
    held: int

    @property
    def level(self) -> TierLevel:
        return self.program.levels[self.index]


def percent_text(bp: int) -> str:
    whole, frac = divmod(bp, 100)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"


# --------------------------------------------------------------------------- codes


def _reject(code: str, message: str, **detail: int | str) -> DomainError:
    return DomainError(code, message, **detail)


def resolve_codes(
    basket: Basket, state: CustomerState | None, programs: ProgramSet, at: datetime, ctx: Context
) -> list[AppliedCode]:
    """Check every code of the basket; the first one refused refuses the basket."""
    out: list[AppliedCode] = []
    seen: set[str] = set()
    for raw in basket.codes:
        code = raw.strip()
        key = code.upper()
        if key in seen:
            continue
        seen.add(key)
        if coupons.looks_like_coupon(code):
            applied = _check_coupon(code, basket, state, programs, at, ctx)
            if any(other.program is applied.program for other in out):
                # A coupon program gives its value once per basket: a second coupon of it
                # would be marked used for nothing, so it is refused and stays valid.
                raise _reject(
                    "not_combinable",
                    f"Only one {applied.program.label!r} coupon can be used per purchase; "
                    "keep the other one for another visit.",
                )
            out.append(applied)
        else:
            out.append(_check_promo(code, basket, state, programs, at, ctx))
    return out


def _common_checks(
    program: PromoCodeProgram | CouponProgram,
    code: str,
    basket: Basket,
    at: datetime,
    ctx: Context,
) -> None:
    scope = program.scope
    if scope.valid_until is not None and at > scope.valid_until:
        raise _reject("code_expired", f"The code {code!r} expired on {scope.valid_until:%Y-%m-%d}.")
    if scope.valid_from is not None and at < scope.valid_from:
        raise _reject("not_eligible", f"The code {code!r} is not valid before {scope.valid_from}.")
    if scope.stores and ctx.store_id not in scope.stores:
        raise _reject("not_eligible", f"The code {code!r} is not valid in this store.")
    target = program.target
    if not any(target.matches(ln.sku, ln.category) for ln in basket.lines):
        raise _reject("not_eligible", f"Nothing in the basket qualifies for {code!r}.")
    missing = program.min_amount - basket.total_before
    if missing > 0:
        raise _reject(
            "minimum_not_met",
            f"The code {code!r} needs a basket of {format_minor(program.min_amount)}: "
            f"{format_minor(missing)} more.",
            missing=missing,
        )


def _check_promo(
    code: str,
    basket: Basket,
    state: CustomerState | None,
    programs: ProgramSet,
    at: datetime,
    ctx: Context,
) -> AppliedCode:
    promo = next((p for p in programs.of(PromoCodeProgram) if p.code.upper() == code.upper()), None)
    if promo is None:
        raise _reject("unknown_code", f"The code {code!r} is not known to any program.")
    _common_checks(promo, code, basket, at, ctx)
    target = promo.target
    qty = sum(
        ln.qty
        for ln in basket.lines
        if (not target.categories and not target.skus)
        or ln.sku in target.skus
        or (ln.category is not None and ln.category in target.categories)
    )
    if qty < promo.min_qty:
        raise _reject(
            "minimum_not_met",
            f"The code {code!r} needs {promo.min_qty} qualifying items: "
            f"{promo.min_qty - qty} more.",
            missing_qty=promo.min_qty - qty,
        )
    if promo.max_uses and ctx.usage.get(f"promo:{promo.id}", 0) >= promo.max_uses:
        raise _reject("code_used_up", f"The code {code!r} has been used up.")
    if promo.max_uses_per_customer:
        if state is None:
            raise _reject("not_eligible", f"The code {code!r} needs a customer card.")
        if state.counter(promo.id, Unit.COUNT) >= promo.max_uses_per_customer:
            raise _reject("code_used_up", f"This customer has already used {code!r}.")
    return AppliedCode(promo, code)


def _check_coupon(
    code: str,
    basket: Basket,
    state: CustomerState | None,
    programs: ProgramSet,
    at: datetime,
    ctx: Context,
) -> AppliedCode:
    coupon = coupons.read_code(code, ctx.verifiers)
    if coupon is None:
        raise _reject(
            "unknown_code", "That coupon code is not valid: it was altered or not issued by us."
        )
    program = next(
        (p for p in programs.of(CouponProgram) if coupons.tag(p.id) == coupon.program_tag), None
    )
    if program is None:
        raise _reject("unknown_code", "That coupon belongs to no program of this shop.")
    if at > coupon.expires_at:
        raise _reject("code_expired", f"The coupon expired on {coupon.expires_at:%Y-%m-%d}.")
    _common_checks(program, "coupon", basket, at, ctx)
    if ctx.usage.get(f"coupon:{coupon.serial}", 0) > 0:
        raise _reject("code_used_up", "The coupon has already been used.")
    if coupon.customer_tag != coupons.NO_CUSTOMER and (
        state is None or coupons.tag(state.customer_id) != coupon.customer_tag
    ):
        raise _reject("not_eligible", "The coupon was issued to another customer.")
    return AppliedCode(program, code, coupon)


def check_wallet(basket: Basket, state: CustomerState | None, programs: ProgramSet) -> None:
    seen: set[str] = set()
    for payment in basket.wallet:
        wallet = programs.get(payment.program)
        if not isinstance(wallet, CashbackProgram):
            raise DomainError("unknown_program", f"There is no wallet {payment.program!r}.")
        if payment.program in seen:
            raise DomainError(
                "duplicate_redemption", f"The wallet {payment.program!r} is used twice."
            )
        seen.add(payment.program)
        if state is None:
            raise DomainError("card_required", "Paying from a wallet needs a customer card.")
        available = state.wallet(wallet.id)
        if payment.amount > available:
            raise DomainError(
                "insufficient_funds",
                f"The {wallet.label.lower()} holds {format_minor(max(available, 0))}, "
                f"{format_minor(payment.amount)} was asked for.",
            )


# --------------------------------------------------------------------------- tiers


def _held_level(program: TierProgram, state: CustomerState, at: datetime) -> int:
    marks = state.lotted.get((f"{program.id}:level", Unit.LEVEL))
    if marks is None:
        return 0
    return max(
        (
            lot.remaining
            for lot in marks.lots.values()
            if lot.expires_at is None or lot.expires_at > at
        ),
        default=0,
    )


def spend_of(program: TierProgram, state: CustomerState, at: datetime) -> int:
    account = state.lotted.get((program.id, Unit.SPEND))
    return account.spendable(at) if account is not None else 0


def tier_of(programs: ProgramSet, state: CustomerState, at: datetime) -> str | None:
    """The customer's tier now (for look-ups): from spend in the window or a held tier."""
    program = programs.tiers
    if program is None:
        return None
    index = max(program.level_for(spend_of(program, state, at)), _held_level(program, state, at))
    return program.levels[index].name


def _tier_eligible(program: TierProgram, line: LineResult) -> bool:
    return line.gift is None and not (
        line.category is not None and line.category in program.excluded_categories
    )


def work_out_tier(
    programs: ProgramSet, state: CustomerState | None, at: datetime, result: Quote
) -> TierStatus | None:
    """The tier this sale runs at: spend so far plus this sale counts toward its own tier."""
    program = programs.tiers
    if program is None or state is None:
        return None
    before = spend_of(program, state, at)
    sale = sum(
        ln.qty * ln.unit_price - ln.discount for ln in result.lines if _tier_eligible(program, ln)
    )
    held = _held_level(program, state, at)
    status = TierStatus(program, max(program.level_for(before + sale), held), before, sale, held)
    result.tier = status.level.name
    return status


def record_spend(
    programs: ProgramSet, at: datetime, tier: TierStatus | None, result: Quote
) -> None:
    """Qualifying spend of this sale (after promotions, before payments) and a tier mark."""
    if tier is None:
        return
    program = tier.program
    spend = 0
    for line in result.lines:
        if _tier_eligible(program, line):
            total = line.qty * line.unit_price - line.discount
            line.earn_base[program.id] = total
            spend += total
    if spend:
        result.spend[program.id] = spend
        # A lifetime window: every sale adds to the customer's one lifetime lot.
        expires = at + timedelta(days=program.window_days) if program.window_days else None
        result.postings.append(Posting.credit(program.id, Unit.SPEND, spend, expires))
    reached = program.level_for(tier.spend_before + tier.sale_amount)
    if reached > tier.held and reached > 0:
        until = None
        if program.downgrade is Downgrade.WINDOW and program.window_days:
            until = at + timedelta(days=program.window_days)
        result.postings.append(
            Posting(f"{program.id}:level", Unit.LEVEL, reached, expires_at=until)
        )


# --------------------------------------------------------------------------- promotions


def _matching(target: Target, lines: list[LineResult]) -> list[LineResult]:
    """The lines ``target`` matches, in order (``Target.matches`` inlined)."""
    categories = target.categories
    skus = target.skus
    if not categories and not skus:
        return list(lines)
    return [
        ln
        for ln in lines
        if ln.sku in skus or (ln.category is not None and ln.category in categories)
    ]


def _spread(total: int, lines: list[LineResult]) -> dict[int, int]:
    """``total`` over ``lines`` in proportion to what is left on each, never beyond it."""
    weights = [ln.qty * ln.unit_price - ln.discount for ln in lines]
    total = min(total, sum(weights))
    shares = allocate(total, weights, weights)
    return {ln.index: s for ln, s in zip(lines, shares, strict=True) if s}


def _percent_off(bp: int, lines: list[LineResult]) -> dict[int, int]:
    return _spread(sum(ln.qty * ln.unit_price - ln.discount for ln in lines) * bp // 10000, lines)


def _open(lines: list[LineResult]) -> list[LineResult]:
    """The lines with something left to pay (``total > 0``)."""
    return [ln for ln in lines if ln.qty * ln.unit_price - ln.discount > 0]


def _paid_units(line: LineResult) -> int:
    return line.qty - line.free_units


def _member_offer(
    p: MemberOfferProgram,
    state: CustomerState | None,
    tier: TierStatus | None,
    ctx: Context,
    result: Quote,
) -> dict[int, int]:
    if state is None:
        return {}
    if p.tiers and (tier is None or tier.level.name not in p.tiers):
        return {}
    if p.tags and not (p.tags & ctx.tags):
        return {}
    lines = _open(_matching(p.target, result.lines))
    if p.price is None:
        return _percent_off(p.percent_bp, lines)
    out = {}
    for ln in lines:
        # A member price is a price: each paid unit comes down from its list price to
        # ``price`` (rewards already on it stay, as they would on the lower price), except
        # a unit sold in a bundle, which costs its share of the bundle's price.
        units = max(_paid_units(ln) - ln.bundled_units, 0)
        off = min(max(ln.unit_price - p.price, 0) * units, ln.total)
        if off:
            out[ln.index] = off
    return out


def _units(result: Quote, target: Target) -> list[tuple[int, int]]:
    """(unit price, line index) for every matching unit not already free, dearest first.

    A unit's price is its member price when one applied before (``LineResult.member_price``):
    a bundle or a free unit worked out from the list price would give the member price's
    saving a second time."""

    # ties by SKU and category, not by position: the result must not depend on line order.
    # Every unit of a line has the same sort key, so the lines are sorted once and expanded.
    def price(ln: LineResult) -> int:
        return ln.unit_price if ln.member_price is None else min(ln.member_price, ln.unit_price)

    lines = [ln for ln in _matching(target, result.lines) if ln.gift is None]
    lines.sort(key=lambda ln: (-price(ln), -ln.unit_price, ln.sku, ln.category or "", ln.index))
    units: list[tuple[int, int]] = []
    for ln in lines:
        paid = ln.qty - ln.free_units
        if paid > 0:
            units.extend([(price(ln), ln.index)] * paid)
    return units


def _buy_x_get_y(p: BuyXGetYProgram, result: Quote) -> dict[int, int]:
    units = _units(result, p.target)
    groups = len(units) // (p.buy + p.get)
    chosen = units[len(units) - groups * p.get :] if groups else []
    if not chosen:
        return {}
    values: dict[int, int] = {}
    for price, index in chosen:
        values[index] = values.get(index, 0) + price
    amount = sum(values.values()) * p.percent_bp // 10000
    keys = sorted(values)
    shares = allocate(amount, [values[k] for k in keys])
    return _pooled(dict(zip(keys, shares, strict=True)), result)


_Pools = dict[tuple[int, str, str], list["LineResult"]]


def _pools(result: Quote) -> _Pools:
    """Lines holding identical units (same price, SKU and category), gifts left out."""
    pools: _Pools = {}
    for ln in result.lines:
        if ln.gift is None:
            pools.setdefault((ln.unit_price, ln.sku, ln.category or ""), []).append(ln)
    return pools


def _pooled(
    values: Mapping[int, int], result: Quote, pools: _Pools | None = None
) -> dict[int, int]:
    """Amounts meant for chosen units, spread over every line holding identical units.

    Units with the same price, SKU and category are interchangeable, so which line a chosen
    unit came from must not matter (line order): each group's amount is split over all its
    lines by what is left on them, never beyond it. ``pools`` is ``_pools(result)`` when the
    caller has it already.
    """
    if pools is None:
        pools = _pools(result)
    groups: dict[tuple[int, str, str], int] = {}
    for index, amount in values.items():
        ln = result.lines[index]
        key = (ln.unit_price, ln.sku, ln.category or "")
        groups[key] = groups.get(key, 0) + amount
    out: dict[int, int] = {}
    for key, amount in groups.items():
        members = pools.get(key, [])
        weights = [ln.qty * ln.unit_price - ln.discount for ln in members]
        take = min(amount, sum(weights))
        for ln, share in zip(members, allocate(take, weights, weights), strict=True):
            if share:
                out[ln.index] = out.get(ln.index, 0) + share
    return out


def _best_bundles(
    combos: list[ComboProgram], result: Quote
) -> tuple[int, list[tuple[ComboProgram, list[tuple[int, int]]]]]:
    """The bundle instances with the largest total saving.

    Each instance takes, per component, the dearest unit still free (which maximises that
    instance's saving); the search tries every number of instances of each bundle (most
    first) and keeps the best total, within ``COMBO_SEARCH_NODES`` tries.
    """
    all_units = _units(result, Target())
    lines = result.lines
    budget = [COMBO_SEARCH_NODES]
    best: tuple[int, list[tuple[ComboProgram, list[tuple[int, int]]]]] = (0, [])
    # per combo, per component: the positions in ``all_units`` it matches, in order
    candidates: list[list[list[int]]] = []
    for combo in combos:
        per_component = []
        for component in combo.components:
            categories = component.categories
            skus = component.skus
            everything = not categories and not skus
            positions = []
            for pos, (_, index) in enumerate(all_units):
                line = lines[index]
                if (
                    everything
                    or line.sku in skus
                    or (line.category is not None and line.category in categories)
                ):
                    positions.append(pos)
            per_component.append(positions)
        candidates.append(per_component)

    def take(k: int, used: list[bool]) -> list[int] | None:
        picked: list[int] = []
        for positions in candidates[k]:
            for pos in positions:
                if not used[pos] and pos not in picked:
                    picked.append(pos)
                    break
            else:
                return None
        return picked

    def search(k: int, used: list[bool], saving: int, chosen: list[Any]) -> None:
        nonlocal best
        budget[0] -= 1
        if saving > best[0]:
            best = (saving, list(chosen))
        if k == len(combos) or budget[0] <= 0:
            return
        combo = combos[k]
        added: list[list[int]] = []
        entries: list[tuple[ComboProgram, list[tuple[int, int]]]] = []
        values: list[int] = []
        local = used[:]
        while True:
            picked = take(k, local)
            if picked is None:
                break
            units = [all_units[pos] for pos in picked]
            value = sum(unit[0] for unit in units) - combo.price
            if value <= 0:
                break
            for pos in picked:
                local[pos] = True
            added.append(picked)
            entries.append((combo, units))
            values.append(value)
        # most instances first, then fewer
        for n in range(len(added), -1, -1):
            mark = used[:]
            for picked in added[:n]:
                for pos in picked:
                    mark[pos] = True
            search(k + 1, mark, saving + sum(values[:n]), chosen + entries[:n])
            if budget[0] <= 0:
                return

    search(0, [False] * len(all_units), 0, [])
    return best


_UNITS = "\x00units:"  # ``plans`` key of a bundle's units per line (beside its shares)


def _combos(
    combos: list[ComboProgram], result: Quote
) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, int]]]:
    """Per bundle: the discount per line, and the units per line its instances take."""
    saving, instances = _best_bundles(combos, result)
    out: dict[str, dict[int, int]] = {}
    taken: dict[str, dict[int, int]] = {}
    pools = _pools(result)
    for combo, units in instances:
        used = taken.setdefault(combo.id, {})
        for _, index in units:
            used[index] = used.get(index, 0) + 1
        weights: dict[int, int] = {}
        for price, index in units:
            weights[index] = weights.get(index, 0) + price
        value = sum(price for price, _ in units) - combo.price
        keys = sorted(weights)
        raw = allocate(value, [weights[k] for k in keys])
        share = _pooled(dict(zip(keys, raw, strict=True)), result, pools)
        target = out.setdefault(combo.id, {})
        for index, amount in share.items():
            target[index] = target.get(index, 0) + amount
            result.lines[index].discount += amount  # provisional, undone below
    for shares in out.values():
        for index, amount in shares.items():
            result.lines[index].discount -= amount
    del saving
    return out, taken


def _wanted(
    program: Any,
    basket: Basket,
    state: CustomerState | None,
    at: datetime,
    ctx: Context,
    codes: list[AppliedCode],
    tier: TierStatus | None,
    result: Quote,
    plans: dict[str, dict[int, int]],
    plans_from: tuple[ComboProgram, ...],
) -> dict[int, int]:
    if isinstance(program, MemberOfferProgram):
        return _member_offer(program, state, tier, ctx, result)
    if isinstance(program, BuyXGetYProgram):
        return _buy_x_get_y(program, result)
    if isinstance(program, ComboProgram):
        if "" not in plans:  # all active bundles are allocated together, once
            active = [c for c in plans_from if c.scope.active(at, ctx.store_id)]
            shares, units = _combos(active, result)
            plans.update(shares)
            plans.update({_UNITS + combo: used for combo, used in units.items()})
            plans[""] = {}
        return plans.get(program.id, {})
    if isinstance(program, TierProgram):
        if tier is None or not tier.level.percent_off_bp:
            return {}
        lines = [ln for ln in _open(result.lines) if _tier_eligible(program, ln)]
        return _percent_off(tier.level.percent_off_bp, lines)
    if isinstance(program, NextVisitProgram):
        if state is None or state.lots_of(program.id, Unit.OFFER).spendable(at) <= 0:
            return {}
        return _percent_off(program.percent_bp, _open(result.lines))
    if isinstance(program, PromoCodeProgram | CouponProgram):
        if not any(c.program is program for c in codes):
            return {}
        lines = _open(_matching(program.target, result.lines))
        if program.percent_bp:
            return _percent_off(program.percent_bp, lines)
        return _spread(program.amount, lines)
    if isinstance(program, GreenProgram):
        if program.flag not in basket.flags:
            return {}
        out = {}
        for ln in _matching(program.target, result.lines):
            if ln.gift is None:
                off = min(program.amount * (ln.qty - ln.free_units), ln.total)
                if off:
                    out[ln.index] = off
        return out
    return {}


PROMOTION_KINDS = (
    MemberOfferProgram,
    ComboProgram,
    BuyXGetYProgram,
    TierProgram,
    NextVisitProgram,
    PromoCodeProgram,
    CouponProgram,
    GreenProgram,
)


def _label(program: Any, tier: TierStatus | None) -> str:
    if isinstance(program, TierProgram) and tier is not None:
        return f"{tier.level.name.capitalize()} {percent_text(tier.level.percent_off_bp)} off"
    return str(program.label)


def apply_promotions(
    basket: Basket,
    state: CustomerState | None,
    programs: ProgramSet,
    at: datetime,
    ctx: Context,
    codes: list[AppliedCode],
    tier: TierStatus | None,
    result: Quote,
) -> None:
    """Promotions in priority order, with stacking rules and the basket's discount cap."""
    budget = programs.max_discount_bp * result.total_before // 10000
    order = sorted(
        (
            (p.scope.priority, i, p)
            for i, p in enumerate(programs.programs)
            if isinstance(p, PROMOTION_KINDS)
        ),
        key=lambda entry: (entry[0], entry[1]),
    )
    from .engine import Discount

    lines = result.lines
    discounts = result.discounts
    applied_any = False
    plans: dict[str, dict[int, int]] = {}
    combos = programs.of(ComboProgram)
    for _, _, program in order:
        if not program.scope.active(at, ctx.store_id):
            continue
        if program.scope.exclusive and applied_any:
            continue
        wanted = _wanted(program, basket, state, at, ctx, codes, tier, result, plans, combos)
        wanted = {i: min(a, lines[i].total) for i, a in wanted.items() if a > 0}
        total = sum(wanted.values())
        if total <= 0:
            continue
        take = min(total, budget)
        if take <= 0:
            continue
        if take < total:
            keys = sorted(wanted)
            amounts = [wanted[k] for k in keys]
            wanted = dict(zip(keys, allocate(take, amounts, amounts), strict=True))
        label = _label(program, tier)
        for index in sorted(wanted):
            amount = wanted[index]
            if amount:
                lines[index].discount += amount
                discounts.append(Discount(program.id, index, amount, label))
        budget -= take
        applied_any = True
        if isinstance(program, ComboProgram):
            for index, units in plans.get(_UNITS + program.id, {}).items():
                lines[index].bundled_units += units
        elif (
            isinstance(program, MemberOfferProgram) and program.price is not None and take == total
        ):
            for index in wanted:  # every unit of these lines now costs the member price
                lines[index].member_price = program.price
        _note_use(program, codes, state, at, result)
        if program.scope.exclusive:
            break


def _note_use(
    program: Any,
    codes: list[AppliedCode],
    state: CustomerState | None,
    at: datetime,
    result: Quote,
) -> None:
    if isinstance(program, PromoCodeProgram):
        key = f"promo:{program.id}"
        result.uses[key] = result.uses.get(key, 0) + 1
        if state is not None:
            result.postings.append(Posting(program.id, Unit.COUNT, 1))
    elif isinstance(program, CouponProgram):
        for applied in codes:
            if applied.program is program and applied.coupon is not None:
                result.uses[f"coupon:{applied.coupon.serial}"] = 1
    elif isinstance(program, NextVisitProgram):
        # The offer used is the live one expiring soonest, named: an unnamed debit takes the
        # soonest-expiring lot, which may be an offer that ran out unused (offers get no
        # expiry events), and the live offer would then be used a second time.
        live = (
            [
                lot
                for lot in state.lots_of(program.id, Unit.OFFER).lots.values()
                if lot.expires_at is None or lot.expires_at > at
            ]
            if state is not None
            else []
        )
        used = min(live, key=Lot.sort_key).lot_id if live else None
        result.postings.append(Posting(program.id, Unit.OFFER, -1, lot=used))
        result.uses[f"offer-used:{program.id}"] = 0  # marker: no new offer from this sale


# --------------------------------------------------------------------------- payments


def apply_wallet_payment(wallet: CashbackProgram, requested: int, result: Quote) -> None:
    """Pay up to ``requested`` minor units from the wallet, split over what is left."""
    from .engine import Discount

    weights = [ln.total for ln in result.lines]
    used = min(requested, sum(weights))
    if used <= 0:
        return
    for line, share in zip(result.lines, allocate(used, weights, weights), strict=True):
        if share:
            line.discount += share
            line.points_paid[wallet.id] = line.points_paid.get(wallet.id, 0) + share
            result.discounts.append(
                Discount(wallet.id, line.index, share, f"Paid from {wallet.label.lower()}")
            )
    result.redeemed[wallet.id] = result.redeemed.get(wallet.id, 0) + used
    result.postings.append(Posting(wallet.id, Unit.MONEY, -used))


# --------------------------------------------------------------------------- earning


def _spent(programs: ProgramSet, result: Quote) -> int:
    """What the basket costs after promotions and rewards, payments (points valued at
    ``point_value``, wallet money 1:1) counted as paid."""
    value = {p.id: p.point_value for p in programs.points}
    total = 0
    for ln in result.lines:
        total += ln.qty * ln.unit_price - ln.discount
        for program, n in ln.points_paid.items():
            total += n * value.get(program, 1)
    return total


def _gifts(programs: ProgramSet, at: datetime, ctx: Context, amount: int, result: Quote) -> None:
    from .engine import LineResult

    for gift in programs.of(GiftProgram):
        if not gift.scope.active(at, ctx.store_id):
            continue
        qty = sum(ln.qty for ln in _matching(gift.target, result.lines) if ln.gift is None)
        if amount < gift.min_amount or qty < gift.min_qty:
            _gift_nudge(programs, gift, amount, result)
            continue
        if gift.gift_sku:
            result.lines.append(
                LineResult(len(result.lines), gift.gift_sku, None, 1, 0, gift=gift.id)
            )
            result.issued.append(
                {"program": gift.id, "kind": "gift", "sku": gift.gift_sku, "text": gift.label}
            )
            continue
        drawn = ctx.usage.get(f"voucher:{gift.id}", 0)
        if drawn >= len(gift.vouchers):
            continue
        voucher = gift.vouchers[drawn]
        result.uses[f"voucher:{gift.id}"] = 1
        result.issued.append(
            {
                "program": gift.id,
                "kind": "voucher",
                "code": voucher,
                "text": f"{gift.label}: {voucher}",
            }
        )


def _gift_nudge(programs: ProgramSet, gift: GiftProgram, amount: int, result: Quote) -> None:
    missing = gift.min_amount - amount
    if programs.nudges.enabled and 0 < missing <= programs.nudges.spend_within:
        result.nudges.append(f"Spend {format_minor(missing)} more for a gift")


def finish_anonymous(programs: ProgramSet, at: datetime, ctx: Context, result: Quote) -> None:
    _gifts(programs, at, ctx, _spent(programs, result), result)


def earn_catalog(
    basket: Basket,
    state: CustomerState,
    programs: ProgramSet,
    at: datetime,
    ctx: Context,
    tier: TierStatus | None,
    result: Quote,
) -> None:
    """Cashback, next-visit offers, reward coupons, gifts, referral rewards and nudges."""
    del basket
    spent = _spent(programs, result)
    for wallet in programs.of(CashbackProgram):
        base = 0
        for ln in result.lines:
            if ln.category is not None and ln.category in wallet.excluded_categories:
                continue
            total = ln.qty * ln.unit_price - ln.discount
            ln.earn_base[wallet.id] = total
            base += total
        earned = base * wallet.percent_bp // 10000
        if earned > 0:
            result.earned[wallet.id] = earned
            result.postings.append(Posting(wallet.id, Unit.MONEY, earned))
    for offer in programs.of(NextVisitProgram):
        if f"offer-used:{offer.id}" in result.uses:
            del result.uses[f"offer-used:{offer.id}"]
            continue
        if not offer.scope.active(at, ctx.store_id) or spent < max(offer.min_amount, 1):
            continue
        until = at + timedelta(days=offer.valid_days)
        result.postings.append(Posting(offer.id, Unit.OFFER, 1, expires_at=until))
        result.issued.append(
            {
                "program": offer.id,
                "kind": "offer",
                "valid_until": until.isoformat(),
                "text": f"{offer.label}: {percent_text(offer.percent_bp)} off your next "
                f"visit until {until:%Y-%m-%d %H:%M}",
            }
        )
    for coupon in programs.of(CouponProgram):
        if (
            coupon.reward_min_spend
            and spent >= coupon.reward_min_spend
            and coupon.scope.active(at, ctx.store_id)
        ):
            result.issued.append(
                {"program": coupon.id, "kind": "coupon", "text": f"New coupon: {coupon.label}"}
            )
    _gifts(programs, at, ctx, spent, result)
    for ref in programs.of(ReferralProgram):
        pending = f"{ref.id}:pending"
        if state.counter(pending, Unit.COUNT) > 0 and spent >= ref.min_amount:
            target = programs.get(ref.points_program)
            assert isinstance(target, PointsProgram)
            result.postings.append(Posting(pending, Unit.COUNT, -1))
            if ref.new_customer_points:
                expires = at + timedelta(days=target.expiry_days) if target.expiry_days else None
                result.postings.append(
                    Posting.credit(target.id, Unit.POINTS, ref.new_customer_points, expires)
                )
            result.referral = ref.id
            result.issued.append(
                {
                    "program": ref.id,
                    "kind": "referral",
                    "points": ref.new_customer_points,
                    "text": f"{ref.label}: {ref.new_customer_points} points",
                }
            )
    _nudges(programs, state, tier, result)


def _nudges(
    programs: ProgramSet, state: CustomerState, tier: TierStatus | None, result: Quote
) -> None:
    nudges = programs.nudges
    if not nudges.enabled:
        return
    for card in programs.stamp_cards:
        after = (
            state.stamp_count(card.id)
            - result.redeemed.get(card.id, 0)
            + result.earned.get(card.id, 0)
        )
        if after < 0:
            continue
        left = card.required - after % card.required
        if after >= card.required:
            continue
        if 0 < left <= nudges.stamps_within:
            s = "" if left == 1 else "s"
            result.nudges.append(f"{left} more stamp{s} to a {card.reward_label.lower()}")
    if tier is not None:
        program = tier.program
        now = tier.spend_before + sum(result.spend.values())
        index = program.level_for(now)
        if index + 1 < len(program.levels):
            nxt = program.levels[index + 1]
            missing = nxt.threshold - now
            if 0 < missing <= nudges.spend_within and nxt.name != tier.level.name:
                result.nudges.append(f"Spend {format_minor(missing)} more to reach {nxt.name}")
