"""Make ``ledger_0005.sqlite`` and ``ledger_0005.json`` (what that code answered) with the
code of revision 0005_compact, for ``tests/ledger/test_migration_0006.py``.

Past the till's 512th event the 0005 code trains compression dictionaries from its own rows
(``codec_dicts``), so this ledger has payloads and answers stored with the built-in and with
trained dictionaries, sales with and without a card, redemptions, a refund, an adjustment
and expiries.

Run from an export of commit 30f50b1 (``git archive 30f50b1 | tar -x -C OLD``)::

    cd OLD && PYTHONPATH=. python <this file> OUT_DIR

then copy ``OUT_DIR/ledger.sqlite`` and ``OUT_DIR/expected.json`` here. Not a test.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service

T0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
MENU = [
    ("espresso", "coffee", 320),
    ("latte", "coffee", 420),
    ("cake", "bakery", 450),
    ("bun", "bakery", 180),
    ("salad", "food", 790),
]
out = Path(sys.argv[1])
settings = replace(load_settings(), data_dir=out)
service = Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)
cards = [service.enrol(Profile(name=n), at=T0)["card"]["code"] for n in ("Ada", "Ben", "Cy")]
answers: dict[str, Any] = {}


def sale(
    rid: str,
    card: str | None,
    at: datetime,
    lines: list[tuple[str, str, int, int]],
    redeem: int = 0,
) -> None:
    basket = Basket(
        tuple(BasketLine(s, q, p, c) for s, c, q, p in lines),
        redeem=(Redemption("points", redeem),) if redeem else (),
    )
    raw = {"card": card, "lines": [list(x) for x in lines], "redeem": redeem}
    answer = service.commit(SaleRequest(basket, card, rid, at, raw))
    if len(answers) < 8 or rid.endswith("17"):  # a sample, before and after the training
        answers["sale:" + rid] = [raw, answer]


sale(
    "R-1",
    cards[0],
    T0 + timedelta(hours=1),
    [("espresso", "coffee", 2, 320), ("cake", "bakery", 1, 450)],
)
sale("R-2", None, T0 + timedelta(hours=2), [("bun", "bakery", 1, 180)])
sale("R-3", cards[1], T0 + timedelta(days=2), [("cake", "bakery", 2, 1000)])
sale("R-4", cards[0], T0 + timedelta(days=3), [("latte", "coffee", 1, 420)], redeem=30)
raw = {"refund": "F-1"}
answers["refund:F-1"] = [
    raw,
    service.refund(
        RefundRequest("F-1", "R-3", (RefundRequestLine("cake", 1),), T0 + timedelta(days=4), raw)
    ),
]
cid = service.lookup(cards[0], T0 + timedelta(days=4))["customer"]["id"]
service.adjust(cid, "points", 5, "goodwill", T0 + timedelta(days=5))
for n in range(520):
    sku, category, price = MENU[n % len(MENU)]
    card = None if n % 7 == 3 and n % 50 != 49 else cards[n % 3]
    at = T0 + timedelta(days=10, minutes=37 * n)
    lines = [(sku, category, 1 + n % 3, price)]
    if n % 4 == 0:
        extra = MENU[(n + 2) % len(MENU)]
        lines.append((extra[0], extra[1], 1, extra[2]))
    sale(f"R-1{n:03d}", card, at, lines, redeem=10 if n % 50 == 49 else 0)
# more than a year later: the first lots expire (recorded by this commit)
sale("R-20", cards[0], T0 + timedelta(days=400), [("latte", "coffee", 1, 450)])
assert verify(service.ledger).ok
expected: dict[str, Any] = {
    "now": NOW.isoformat(),
    "cards": cards,
    "lookups": {c: service.lookup(c) for c in cards},
    "customers": {},
    "answers": answers,
}
for c in cards:
    customer_id = expected["lookups"][c]["customer"]["id"]
    expected["customers"][customer_id] = service.customer(customer_id, limit=10)
service.ledger.close()
path = ledger_path(settings)
conn = sqlite3.connect(path)
assert conn.execute("SELECT count(*) FROM codec_dicts").fetchone()[0] == 2
conn.execute("PRAGMA journal_mode = DELETE")
conn.commit()
conn.execute("VACUUM")
conn.close()
(out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
print(path, path.stat().st_size)
