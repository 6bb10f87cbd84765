"""Signed digital cards (``LC1:...``, ``cards print --sign``, a phone's card) at the till:
accepted once a key listed in ``[shop] card_public_keys`` verifies them, refused by name
otherwise. Before, no till could read one: nothing called ``verify_card``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers import cards
from drivers.decode import decode_file
from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import ConfigError, embedded_default_text, load_settings
from pos_loyalty.domain.errors import NotFound
from pos_loyalty.service import Profile, Service

SHOP = cards.generate_key()


def config(tmp_path: Path, keys: list[str]) -> Path:
    listed = ", ".join(f'"{k}"' for k in keys)
    text = embedded_default_text().replace(
        "card_public_keys = []", f"card_public_keys = [{listed}]", 1
    )
    assert f"card_public_keys = [{listed}]" in text
    path = tmp_path / "till.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Service]:
    cards.save_public_key(SHOP.public_key(), tmp_path / "shop-card-key.pub")
    settings = load_settings(config(tmp_path, ["shop-card-key.pub"]), data_dir=tmp_path / "d")
    service = open_service(settings)
    yield service
    service.ledger.close()


def test_a_signed_card_opens_its_customer_from_a_decoded_qr(till: Service, tmp_path: Path) -> None:
    enrolled = till.enrol(Profile(name="Ada"))
    payload = cards.sign_card(enrolled["card"]["code"], SHOP)
    cards.qr_png(payload, tmp_path / "phone.png")
    read = decode_file(tmp_path / "phone.png")
    assert [r.text for r in read] == [payload]
    assert till.lookup(read[0].text)["customer"]["id"] == enrolled["customer_id"]


def test_an_altered_or_foreign_signed_card_is_refused(till: Service) -> None:
    code = till.enrol(Profile(name="Ada"))["card"]["code"]
    payload = cards.sign_card(code, SHOP)
    other = till.enrol(Profile(name="Ben"))["card"]["code"]
    forged = payload.replace(code, other)  # another customer's code under Ada's signature
    with pytest.raises(NotFound) as refused:
        till.lookup(forged)
    assert refused.value.code == "unknown_card" and "does not match" in refused.value.message
    with pytest.raises(NotFound) as unknown_key:
        till.lookup(cards.sign_card(code, cards.generate_key()))
    assert "does not know" in unknown_key.value.message


def test_a_till_without_card_keys_says_what_to_set(tmp_path: Path) -> None:
    service = open_service(load_settings(None, data_dir=tmp_path))
    try:
        code = service.enrol(Profile(name="Ada"))["card"]["code"]
        with pytest.raises(NotFound) as refused:
            service.lookup(cards.sign_card(code, SHOP))
        assert "card_public_keys" in refused.value.message
    finally:
        service.ledger.close()


def test_a_card_key_that_is_missing_or_not_ed25519_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_settings(config(tmp_path, ["nope.pub"]))
    assert missing.value.key == "shop.card_public_keys[0]"
    assert "cannot read" in missing.value.problem
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "junk.pub").write_text("not a key")
    for name, problem in (("ec.pub", "not an Ed25519"), ("junk.pub", "not a PEM")):
        with pytest.raises(ConfigError) as wrong:
            load_settings(config(tmp_path, [name]))
        assert problem in wrong.value.problem
