"""Pure helpers of the terminal: parsing what the cashier types, wording what the till shows.

No Textual here, so all of it is testable without a screen. Amounts are integer minor units
(2 decimals: the currencies this shop set supports); display goes through ``format_minor``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pos_loyalty.domain.basket import BasketLine
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.money import format_minor
from pos_loyalty.domain.programs import ProgramSet, StampCardProgram

STAMP_ON = "\u25cf"  # ●
STAMP_OFF = "\u25cb"  # ○

_PRICE = re.compile(r"^(\d{1,7})(?:[.,](\d{1,2}))?$")
_QTY = re.compile(r"^(\d{1,4})[x*\u00d7]$", re.IGNORECASE)
_QTY_AFTER = re.compile(r"^[x*\u00d7](\d{1,4})$", re.IGNORECASE)
QUICK_SKU = "item"


class EntryError(ValueError):
    """What the cashier typed cannot be used; ``str()`` says why, in plain words."""


def parse_price(text: str) -> int:
    """``"3.20"``/``"3,20"`` → 320; ``"3"`` → 300; ``"3.5"`` → 350. Never a float."""
    match = _PRICE.match(text.strip())
    if not match:
        # Never the typed text: it may be anything a reader typed into the field.
        raise EntryError("Type the price last, like 3.20")
    whole, frac = match.group(1), (match.group(2) or "0").ljust(2, "0")
    return int(whole) * 100 + int(frac)


def parse_line(text: str, categories: Iterable[str] = ()) -> BasketLine:
    """A basket line from what the cashier typed.

    Forms (the price always last; quantity ``2x`` first or ``x2`` anywhere)::

        3.20                      a quick amount
        coffee 3.20               a known category (its name is the SKU too)
        espresso 3.20             a SKU
        espresso coffee 3.20      SKU and category
        2x espresso coffee 3.20   two of them
    """
    tokens = text.split()
    if not tokens:
        raise EntryError("Type an item and its price, e.g. espresso coffee 3.20")
    qty = 1
    rest: list[str] = []
    for i, token in enumerate(tokens):
        m = _QTY.match(token) if i == 0 else None
        m = m or _QTY_AFTER.match(token)
        if m and qty == 1:
            qty = int(m.group(1))
        else:
            rest.append(token)
    if qty < 1:
        raise EntryError("The quantity must be at least 1")
    if not rest:
        raise EntryError("Type the price last, e.g. espresso 3.20")
    price = parse_price(rest[-1])
    names = rest[:-1]
    known = {c.lower() for c in categories}
    if not names:
        return BasketLine(QUICK_SKU, qty, price, None)
    if len(names) == 1:
        name = names[0].lower()
        return BasketLine(name, qty, price, name if name in known else None)
    if len(names) == 2:
        return BasketLine(names[0].lower(), qty, price, names[1].lower())
    raise EntryError("Too many words: type SKU, then category, then price")


def parse_points(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not text.isdigit():
        raise EntryError("Points to pay with: type a whole number, e.g. 200")
    return int(text)


def parse_codes(text: str) -> tuple[str, ...]:
    return tuple(c for c in re.split(r"[\s,;]+", text.strip()) if c)


def known_categories(programs: ProgramSet) -> set[str]:
    out: set[str] = set()
    for card in programs.stamp_cards:
        out |= set(card.categories)
    for pts in programs.points:
        out |= set(pts.excluded_categories)
    return out


def line_text(line: BasketLine) -> str:
    what = line.sku if line.category in (None, line.sku) else f"{line.sku} ({line.category})"
    qty = f"{line.qty} x " if line.qty != 1 else ""
    return f"{qty}{what} @ {format_minor(line.unit_price)}"


# --------------------------------------------------------------------------- wording


def is_ledger_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the ledger file failing (damaged, locked, not a ledger), by class
    name: this module stays free of the ledger's imports (SQLAlchemy)."""
    return "LedgerError" in {cls.__name__ for cls in type(exc).__mro__}


def plain_error(exc: BaseException) -> str:
    """What went wrong, in words for a cashier: never a traceback or an exception name."""
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, EntryError):
        return str(exc)
    # By class name: this module stays free of the ledger's imports (SQLAlchemy).
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "LedgerDamaged" in names:
        return "The till's records are damaged; nothing was changed. Call support."
    if "LedgerError" in names:
        return "The till's records cannot be used right now; nothing was changed. Call support."
    return "Something went wrong at the till; nothing was changed. Try again or call support."


def stamp_row(balance: int, required: int) -> str:
    """``●●●○○○○○○`` for 3 of 9; a full card (or more) shows the progress on the next one."""
    filled = balance % required if balance > 0 else 0
    return STAMP_ON * filled + STAMP_OFF * (required - filled)


def full_cards(balance: int, required: int) -> int:
    return balance // required if balance > 0 else 0


def nudges(programs: ProgramSet, balances: Mapping[str, Any]) -> list[str]:
    """Sentences the cashier can say: how close the next reward is."""
    out = []
    for card in programs.stamp_cards:
        bal = int(balances.get(card.id, {}).get("balance", 0))
        if full_cards(bal, card.required):
            out.append(f"{card.reward_label} is ready: it comes off the next {_thing(card)}.")
        missing = card.required - (bal % card.required if bal > 0 else 0)
        if bal < 0:
            missing = card.required - bal
        noun = "stamp" if missing == 1 else "stamps"
        out.append(f"{missing} more {noun} to a {card.reward_label.lower()}.")
    return out


def _thing(card: StampCardProgram) -> str:
    cats = sorted(card.categories)
    return cats[0] if len(cats) == 1 else "qualifying item"


_KINDS = {
    "sale.committed": "Sale",
    "refund.committed": "Refund",
    "customer.enrolled": "Enrolled",
    "card.issued": "Card issued",
    "card.blocked": "Card blocked",
    "account.adjusted": "Adjusted",
    "points.expired": "Points expired",
}


def when_text(iso: str) -> str:
    """``2026-11-22T09:15:00+00:00`` → ``2026-11-22 09:15`` (UTC, as stored)."""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso[:16]


def history_text(entry: Mapping[str, Any]) -> str:
    kind = _KINDS.get(str(entry.get("kind")), str(entry.get("kind")))
    parts = [when_text(str(entry.get("at", ""))), kind]
    if entry.get("key"):
        parts.append(str(entry["key"]))
    changes = ", ".join(f"{c['program']} {c['delta']:+d}" for c in entry.get("changes", []))
    if changes:
        parts.append(changes)
    if "amount" in entry and kind == "Refund":
        parts.append(f"back {format_minor(int(entry['amount']))}")
    return "  ".join(parts)


def balances_lines(programs: ProgramSet, balances: Mapping[str, Any]) -> list[str]:
    """One line per program: stamps drawn, points with their worth."""
    out = []
    for card in programs.stamp_cards:
        bal = int(balances.get(card.id, {}).get("balance", 0))
        extra = ""
        if full_cards(bal, card.required):
            extra = f"  + {full_cards(bal, card.required)} full card(s)"
        shown = f"{bal % card.required if bal > 0 else bal}/{card.required}"
        out.append(f"{card.label}: {stamp_row(bal, card.required)} {shown}{extra}")
    for pts in programs.points:
        b = balances.get(pts.id, {})
        bal = int(b.get("balance", 0))
        worth = format_minor(int(b.get("value", 0)))
        out.append(f"{pts.label}: {bal} (worth {worth})")
    for program_id, b in balances.items():
        if b.get("kind") == "wallet":
            label = getattr(programs.get(program_id), "label", program_id)
            spend = "can be paid out" if b.get("payout") else "to spend here"
            out.append(f"{label}: {format_minor(int(b.get('balance', 0)))} in the wallet ({spend})")
    return out


def earned_text(programs: ProgramSet, earned: Mapping[str, int]) -> str:
    if not earned:
        return "nothing"
    parts = []
    for program_id, amount in earned.items():
        program = programs.get(program_id)
        label = getattr(program, "label", program_id)
        unit = "stamp" if isinstance(program, StampCardProgram) else "point"
        parts.append(f"{amount} {unit}{'s' if abs(amount) != 1 else ''} ({label})")
    return ", ".join(parts)


def first_name(customer: Mapping[str, Any]) -> str:
    name = customer.get("name")
    return str(name) if name else "Customer (no name given)"


def contact(customer: Mapping[str, Any]) -> str:
    bits = [str(customer[k]) for k in ("email", "phone") if customer.get(k)]
    return " / ".join(bits)


def sale_raw(
    card: str | None, lines: Sequence[BasketLine], codes: Sequence[str], redeem: int
) -> dict[str, Any]:
    """The request as the terminal sent it (its hash guards the receipt id)."""
    return {
        "card": card,
        "lines": [
            {"sku": ln.sku, "category": ln.category, "qty": ln.qty, "unit_price": ln.unit_price}
            for ln in lines
        ],
        "codes": list(codes),
        "redeem": redeem,
    }
