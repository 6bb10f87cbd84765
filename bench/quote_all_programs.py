"""Quote time with every example program active: median over a 50-line basket.

Every program documented in ``config.example.toml`` is switched on (the ``enabled = false``
lines are dropped), a customer is enrolled, and ``Service.quote`` is timed on a 50-line
basket of the demo menu with the green-action flag and a promo code. Target: median <= 1 ms.

    python bench/quote_all_programs.py [--n 300]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from _common import basket_line, median_ms, p99_ms, timed, verdict

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import embedded_default_text, load_settings
from pos_loyalty.domain.basket import Basket
from pos_loyalty.service import Profile, SaleRequest

TARGET_MS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = re.sub(r"\nenabled = false\n", "\n", embedded_default_text())
        path = Path(tmp) / "all.toml"
        path.write_text(text, encoding="utf-8")
        service = open_service(load_settings(path, data_dir=Path(tmp) / "data"))
        try:
            card = service.enrol(Profile(name="Bench"))["card"]["code"]
            basket = Basket(
                tuple(basket_line(i) for i in range(50)), codes=("TAKE5",), flags=("own_cup",)
            )
            request = SaleRequest(basket, card)
            for _ in range(20):
                service.quote(request)
            samples = [timed(lambda: service.quote(request)) for _ in range(args.n)]
        finally:
            service.ledger.close()
    median = median_ms(samples)
    print(
        f"quote, 50 lines, {len(service.programs.programs)} programs: "
        f"median {median:.3f} ms, p99 {p99_ms(samples):.3f} ms "
        f"(target <= {TARGET_MS} ms: {verdict(median <= TARGET_MS)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
