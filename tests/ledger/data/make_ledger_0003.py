"""Make ``ledger_0003.sqlite`` and ``ledger_0003.json`` (what that code answered) with the
code before revision 0005_compact, for ``tests/ledger/test_migration.py``.

Run from an export of commit 545f5c4 (``git archive 545f5c4 | tar -x -C OLD``)::

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
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
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
    answers["sale:" + rid] = [raw, service.commit(SaleRequest(basket, card, rid, at, raw))]


sale(
    "R-1",
    cards[0],
    T0 + timedelta(hours=1),
    [("espresso", "coffee", 2, 320), ("cake", "bakery", 1, 450)],
)
sale("R-2", None, T0 + timedelta(hours=2), [("bun", "bakery", 1, 180)])
sale(
    "R-3",
    cards[1],
    T0 + timedelta(days=2),
    [("cake", "bakery", 2, 1000), ("latte", "coffee", 1, 420)],
)
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
for n in range(5):
    sale(f"R-1{n}", cards[n % 3], T0 + timedelta(days=10 + n), [("espresso", "coffee", 1 + n, 320)])
# more than a year later: the first lots expire (recorded by this commit)
sale("R-20", cards[0], T0 + timedelta(days=400), [("latte", "coffee", 1, 450)])
sale("R-21", cards[1], T0 + timedelta(days=20), [("cake", "bakery", 3, 500)], redeem=20)
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
    expected["customers"][customer_id] = service.customer(customer_id, limit=100)
service.ledger.close()
path = ledger_path(settings)
conn = sqlite3.connect(path)
conn.execute("PRAGMA journal_mode = DELETE")
# 0004_bootstrap was an empty placeholder in this tree: the file is a 0003_sync ledger
conn.execute("UPDATE alembic_version SET version_num = '0003_sync'")
conn.commit()
conn.execute("PRAGMA page_size = 512")
conn.execute("VACUUM")
conn.close()
(out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
print(path, path.stat().st_size)
