"""The server's per-event hash check (``WireEvent.checked_payload``): its fast path encodes
with orjson, which must give the reference canonical JSON byte for byte wherever it is used,
and must never accept what the reference check refuses."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.ledger.codec import canonical, chain_hash, payload_of
from sync.protocol import (
    PairRequest,
    PullResponse,
    WireEvent,
    _fast_hash_ok,
    _loads_lossless,
    canonical_fast,
    cursor_tag,
    make_cursor,
    parse_cursor,
    slot_tag,
)

# Every code point, lone surrogates included (json.loads makes them from "\ud800").
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_ints = st.integers() | st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 0, -1]
)
_json_values = st.recursive(
    st.none() | st.booleans() | _ints | _any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_any_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=600)
@given(_json_values)
def test_canonical_fast_is_canonical_or_refuses(value: Any) -> None:
    try:
        fast = canonical_fast(value)
    except TypeError:  # orjson.JSONEncodeError: the caller takes the reference path
        return
    assert fast == canonical(value)


@settings(max_examples=300)
@given(_json_values)
def test_decoding_then_fast_encoding_matches_the_reference(value: Any) -> None:
    # As text (a lone surrogate cannot be UTF-8 bytes, so ``canonical`` itself refuses it).
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        decoded = _loads_lossless(text)
    except ValueError:  # a lone surrogate, or jiter's depth limit: the reference path
        return
    assert decoded == json.loads(text)
    try:
        fast = canonical_fast(decoded)
    except TypeError:
        return
    assert fast == canonical(decoded) == text.encode()


def test_control_characters_and_non_ascii_encode_alike() -> None:
    value = {"ä": '\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f"\\/\u2028\u2029€😀', "a": [1, -(2**63)]}
    assert canonical_fast(value) == canonical(value)


def _wire(
    event: Event, prev: bytes, payload: str | None = None, digest: str | None = None
) -> WireEvent:
    return WireEvent(
        id=event.id,
        terminal_id=event.terminal_id,
        seq=event.seq,
        kind=event.kind.value,
        at=event.at.isoformat(),
        customer_id=event.customer_id,
        key=event.key,
        payload=payload if payload is not None else payload_of(event),
        prev_hash=prev.hex(),
        hash=digest if digest is not None else chain_hash(prev, event).hex(),
    )


def _event(data: dict[str, Any]) -> Event:
    return Event(
        "0193a3b4-1111-7abc-8def-0123456789ab",
        Kind.ACCOUNT_ADJUSTED,
        "till-1",
        datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC),
        "0193a3b4-2222-7abc-8def-0123456789ab",
        postings=(Posting("points", Unit.POINTS, 12),),
        data=data,
        seq=7,
    )


def test_a_genuine_event_with_unusual_text_passes_the_fast_check() -> None:
    ev = _event({"reason": "Café \x00\n\u2028 😀", "n": 2**63 - 1})
    wire = _wire(ev, b"\x01" * 32)
    payload = _loads_lossless(wire.payload)
    assert _fast_hash_ok(wire, payload)
    assert wire.checked_payload() == payload


def test_an_edited_payload_is_refused() -> None:
    ev = _event({"reason": "bench"})
    good = _wire(ev, b"\x02" * 32)
    edited = good.payload.replace('"delta":12', '"delta":13')
    assert edited != good.payload
    assert _wire(ev, b"\x02" * 32, payload=edited, digest=good.hash).checked_payload() is None


def test_a_genuine_event_with_a_float_takes_the_reference_check() -> None:
    ev = _event({"reason": "float", "ratio": 1e16, "small": 1e-7})
    wire = _wire(ev, b"\x03" * 32)
    with pytest.raises(TypeError):  # a LosslessFloat stops the fast encoding
        canonical_fast(_loads_lossless(wire.payload))
    assert not _fast_hash_ok(wire, _loads_lossless(wire.payload))
    assert wire.checked_payload() == json.loads(wire.payload)


@pytest.mark.parametrize("number", [1e-7, 1e-5, 2**64 + 1])
def test_a_hash_over_orjson_bytes_is_refused_where_they_differ(number: float | int) -> None:
    """A till that hashed orjson's encoding (not the canonical one) must not pass: for some
    floats (``1e-07`` against ``1e-7``) and integers beyond 64 bits the two differ, and the
    fast path must not be the one deciding. (A forged hash over a huge integer's text with
    ``.0`` appended stands in where orjson cannot encode the value at all.)"""
    ev = _event({"reason": "forged", "x": number})
    prev = b"\x04" * 32
    body = ev.body()
    body["seq"] = ev.seq
    try:
        forged_bytes = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        forged_bytes = (
            json.dumps(body, sort_keys=True, separators=(",", ":"))
            .replace(str(number), str(number) + ".0")
            .encode()
        )
    assert forged_bytes != canonical(body)
    forged = hashlib.sha256(prev + forged_bytes).hexdigest()
    assert _wire(ev, prev, digest=forged).checked_payload() is None
    assert _wire(ev, prev).checked_payload() is not None


# Texts close to JSON: the characters JSON is made of, and a few it is not.
_json_ish = st.text(
    st.sampled_from(list('{}[]:,"\\ -+.0123456789eEtrufalsn\x01u00dD8AfF') + ["\u00e9"]),
    max_size=30,
)


@settings(max_examples=1500)
@given(st.one_of(_json_ish, _json_values.map(json.dumps)))
def test_jiter_takes_no_text_json_refuses_and_reads_it_alike(text: str) -> None:
    try:
        decoded = _loads_lossless(text)
    except ValueError:
        return  # refused: the reference path decides, as before
    reference = json.loads(text)  # raises if jiter took a text json refuses
    try:
        fast = canonical_fast(decoded)
    except TypeError:
        return  # a float, or an integer beyond 64 bits: the reference path
    assert decoded == reference
    assert fast == canonical(reference)


def test_a_payload_with_more_than_postings_and_data_is_refused() -> None:
    """The hash covers "p" and "d" only: anything else in the payload text would travel
    unchecked, so it is refused (both paths)."""
    ev = _event({"reason": "bench"})
    good = _wire(ev, b"\x04" * 32)
    assert good.checked_payload() is not None
    padded = good.payload[:-1] + ',"x":"unchecked"}'
    wire = _wire(ev, b"\x04" * 32, payload=padded, digest=good.hash)
    assert not _fast_hash_ok(wire, _loads_lossless(padded))
    assert wire.checked_payload() is None


def test_additive_fields_keep_older_peers_working() -> None:
    """A till of an older release sends no ``terminal_id`` when pairing; an older server
    answers a pull without ``head``: both still parse."""
    assert (
        PairRequest.model_validate({"protocol": 1, "token": "pair_" + "x" * 20}).terminal_id is None
    )
    with pytest.raises(ValueError):
        PairRequest.model_validate({"token": "pair_" + "x" * 20, "terminal_id": "till 7"})
    old = PullResponse.model_validate_json(
        b'{"protocol":1,"events":[],"cursor":"m1:3","more":false}'
    )
    assert old.head is None


def test_cursors_tagged_and_untagged() -> None:
    tag = slot_tag(bytes(range(32)))
    assert tag == "0001020304050607"
    tagged = make_cursor("m1", 42, tag)
    assert tagged == "m1:42~0001020304050607"
    assert parse_cursor(tagged) == ("m1", 42) and cursor_tag(tagged) == tag
    assert parse_cursor("m1:42") == ("m1", 42) and cursor_tag("m1:42") is None
    assert parse_cursor("a:b:7") == ("a:b", 7)  # an older merchant id with a colon
    for bad in ("m1", "m1:x", "m1:42~", "m1:42~zz", ":4"):
        with pytest.raises(ValueError):
            parse_cursor(bad)
