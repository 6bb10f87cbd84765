"""Crash-test writer: commits sales in a loop until it is killed (see test_crash.py).

Usage: ``python crash_writer.py DATA_DIR CARD NEXT``

Opens the service on ``DATA_DIR`` (the demo programs), prints ``ready``, then:

- when ``NEXT`` > 0, commits ``R-(NEXT-1)`` again (the last acknowledged receipt: must be a
  replay) and prints ``replay R-(NEXT-1) <points earned>``;
- commits ``R-NEXT``, ``R-NEXT+1``, ... for ``CARD`` and, after each commit has returned,
  prints and flushes ``ok R-n <points earned>``. ``R-NEXT`` is the receipt that was in flight
  when the previous writer was killed: it may be committed already (then this is a replay).

Every receipt's request is a function of its number only, so a replay is the same request.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.service import SaleRequest


def request(card: str, n: int) -> SaleRequest:
    receipt_id = f"R-{n}"
    price = 100 + (n % 7) * 137  # earns 1 to 9 points
    lines = (BasketLine("bun", 1, price, "bakery"),)
    raw = {"receipt_id": receipt_id, "card": card, "price": price}
    return SaleRequest(Basket(lines), card, receipt_id, None, raw)


def main(argv: list[str]) -> int:
    data_dir, card, start = Path(argv[1]), argv[2], int(argv[3])
    service = open_service(load_settings(data_dir=data_dir))
    print("ready", flush=True)
    if start > 0:
        again = service.commit(request(card, start - 1))
        print(f"replay R-{start - 1} {again['earned'].get('points', 0)}", flush=True)
    n = start
    while True:
        response = service.commit(request(card, n))
        print(f"ok R-{n} {response['earned'].get('points', 0)}", flush=True)
        n += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
