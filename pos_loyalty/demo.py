"""Demo data for the main job: three customers with pre-printed cards of known codes.

The codes are fixed (serials 1, 2, 3 with the shop's prefix) so the README can print them.
Created once, on the first run over an empty ledger.
"""

from __future__ import annotations

from pos_loyalty.domain.cardcode import make_card_code
from pos_loyalty.service import Profile, Service

DEMO_CUSTOMERS = (
    (1, Profile(name="Ada Demo", email="ada@example.com", consents={"marketing": True})),
    (2, Profile(name="Ben Demo", phone="+49 30 1234567")),
    (3, Profile(name="Cleo Demo")),
)


def demo_codes(prefix: str) -> list[str]:
    return [make_card_code(prefix, serial) for serial, _ in DEMO_CUSTOMERS]


def seed_demo(service: Service) -> list[str]:
    """Enrol the demo customers unless their cards exist; returns the demo card codes."""
    prefix = service.settings.card_prefix
    with service.ledger.reader() as tx:
        missing = [
            (serial, profile)
            for serial, profile in DEMO_CUSTOMERS
            if tx.card(make_card_code(prefix, serial)) is None
        ]
    for serial, profile in missing:
        service.enrol(profile, card_code=make_card_code(prefix, serial))
    return demo_codes(prefix)
