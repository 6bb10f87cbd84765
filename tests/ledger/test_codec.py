"""The stored forms in ``codec``: cached answers with and without the preset dictionary."""

from __future__ import annotations

import zlib

from pos_loyalty.ledger.codec import canonical, pack_response, unpack_response

ANSWER = {
    "balances": {"points": {"balance": 69, "kind": "points", "value": 69}},
    "currency": "EUR",
    "lines": [{"discount": 0, "qty": 1, "sku": "cappuccino", "total": 320, "unit_price": 320}],
    "receipt_text": ["Points: 69", "Tier: bronze"],
    "total": 320,
}


def test_packed_answer_round_trips_and_is_smaller_than_plain_zlib() -> None:
    packed = pack_response(ANSWER)
    assert unpack_response(packed) == ANSWER
    assert len(packed) < len(zlib.compress(canonical(ANSWER), 6))


def test_answers_stored_before_the_dictionary_still_read() -> None:
    old = zlib.compress(canonical(ANSWER), 6)
    assert unpack_response(old) == ANSWER
    assert unpack_response(memoryview(old)) == ANSWER


def test_missing_answers() -> None:
    assert unpack_response(b"") == {}
    assert unpack_response(None) == {}
    assert unpack_response("{}") == {}
