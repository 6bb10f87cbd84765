"""Helpers shared by the bench scripts: timing statistics, output lines, a demo service.

Not a benchmark itself. The scripts import it as ``_common`` (``python bench/<name>.py`` puts
``bench/`` first on ``sys.path``).
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import BasketLine
from pos_loyalty.service import Service

# The PRAGMAs the ledger sets on every connection (pos_loyalty.ledger.store.make_engine).
DURABLE_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)


def median_ms(samples: Sequence[float]) -> float:
    """Median of durations given in seconds, in milliseconds."""
    return statistics.median(samples) * 1000.0


def p99_ms(samples: Sequence[float]) -> float:
    """99th percentile (nearest rank) of durations in seconds, in milliseconds."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return ordered[rank - 1] * 1000.0


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.inf


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def demo_service(data_dir: Path) -> Service:
    """The embedded demo shop (coffee card, points, welcome) on a fresh ledger in ``data_dir``."""
    return open_service(load_settings(None, data_dir=data_dir))


def durable_connection(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the ledger's PRAGMAs; transactions issued by hand."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in DURABLE_PRAGMAS:
        conn.execute(pragma)
    return conn


# A small menu of the demo shop: (sku, category, unit price in minor units).
MENU: tuple[tuple[str, str, int], ...] = (
    ("espresso", "coffee", 220),
    ("cappuccino", "coffee", 320),
    ("flat-white", "coffee", 360),
    ("croissant", "bakery", 250),
    ("muffin", "bakery", 290),
    ("orange-juice", "drinks", 380),
    ("water", "drinks", 150),
    ("sandwich", "food", 650),
    ("salad", "food", 790),
    ("gift-card-10", "gift-card", 1000),
)


def basket_line(index: int, qty: int = 1) -> BasketLine:
    sku, category, price = MENU[index % len(MENU)]
    return BasketLine(sku=sku, qty=qty, unit_price=price, category=category)


def line_json(line: BasketLine) -> dict[str, object]:
    """A basket line as the plugin API's request body carries it."""
    return {
        "sku": line.sku,
        "qty": line.qty,
        "unit_price": line.unit_price,
        "category": line.category,
    }


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
