"""The stored forms in ``codec``: payloads and cached answers (compressed, with built-in or
trained dictionaries), ids, digests and times, and the forms older revisions wrote."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.ledger.codec import (
    KIND_CODES,
    PAYLOAD,
    RESPONSE,
    RESPONSE_ZDICT,
    Dictionaries,
    at_key,
    at_text,
    canonical,
    chain_hash,
    decode_payload,
    earned_key,
    earned_value,
    encode_payload,
    event_from_row,
    expires_key,
    expires_value,
    id_key,
    id_text,
    kind_key,
    kind_text,
    lot_key,
    lot_text,
    pack_response,
    payload_of,
    time_key,
    time_value,
    train,
    unpack_response,
)

ANSWER = {
    "balances": {"points": {"balance": 69, "kind": "points", "value": 69}},
    "currency": "EUR",
    "lines": [{"discount": 0, "qty": 1, "sku": "cappuccino", "total": 320, "unit_price": 320}],
    "receipt_text": ["Points: 69", "Tier: bronze"],
    "total": 320,
}

# -- strategies: any event the domain can make ---------------------------------------------

texts = st.text(max_size=24)  # any Unicode, quotes, backslashes, control characters
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
aware_times = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-9, minutes=-30))]
    ),
)
postings = st.builds(
    Posting,
    program=texts,
    unit=st.sampled_from(list(Unit)),
    delta=st.integers(min_value=-(10**12), max_value=10**12),
    lot=st.none() | texts,
    expires_at=st.none() | aware_times,
)
events = st.builds(
    Event,
    id=st.uuids().map(str) | texts,
    kind=st.sampled_from(list(Kind)),
    terminal_id=texts,
    at=aware_times,
    customer_id=st.none() | st.uuids().map(str),
    key=st.none() | texts,
    postings=st.lists(postings, max_size=4).map(tuple),
    data=st.dictionaries(texts, json_values, max_size=5),
    seq=st.integers(min_value=1, max_value=2**40),
)


class Row:
    """An ``events`` row as ``event_from_row`` reads it."""

    def __init__(self, event: Event, payload: Any) -> None:
        self.id, self.kind, self.terminal_id = event.id, event.kind.value, event.terminal_id
        self.at, self.customer_id, self.key = event.at.isoformat(), event.customer_id, event.key
        self.seq, self.payload = event.seq, payload


def trained() -> Dictionaries:
    dicts = Dictionaries()
    sample = [
        canonical({"p": [], "d": {"lines": [{"sku": f"sku-{i}", "qty": i}]}}) for i in range(99)
    ]
    dicts.add(1, PAYLOAD, train(sample))
    dicts.add(2, RESPONSE, train([canonical(ANSWER)] * 20))
    return dicts


@settings(max_examples=300, deadline=None)
@given(events, st.booleans())
def test_any_event_round_trips_to_the_same_text_and_hash(event: Event, with_trained: bool) -> None:
    dicts = trained() if with_trained else None
    text = payload_of(event)
    stored = encode_payload(text, dicts)
    assert isinstance(stored, bytes)
    assert decode_payload(stored, dicts) == text
    back = event_from_row(Row(event, stored), dicts)
    assert canonical(back.body()) == canonical(event.body())
    assert chain_hash(b"\x07" * 32, back) == chain_hash(b"\x07" * 32, event)
    # the text itself (rows before 0005, the sync wire) reads the same
    assert event_from_row(Row(event, text)) == back


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(texts, json_values, max_size=6), st.booleans())
def test_any_answer_round_trips(answer: dict[str, Any], with_trained: bool) -> None:
    dicts = trained() if with_trained else None
    assert unpack_response(pack_response(answer, dicts), dicts) == json.loads(canonical(answer))


def test_a_trained_dictionary_makes_payloads_smaller_and_is_needed_to_read_them() -> None:
    dicts = trained()
    text = canonical({"p": [], "d": {"lines": [{"sku": "sku-7", "qty": 7}]}}).decode()
    with_trained = encode_payload(text, dicts)
    built_in = encode_payload(text)
    assert len(with_trained) < len(built_in) < len(text)
    assert decode_payload(built_in) == text
    with pytest.raises(ValueError, match="dictionary 1, which this ledger does not hold"):
        decode_payload(with_trained, Dictionaries())
    # a transaction's child finds it through its parent, or loads it once
    assert decode_payload(with_trained, dicts.child(None)) == text
    loads: list[int] = []
    root = Dictionaries()

    def loader(ident: int) -> tuple[str, bytes] | None:
        loads.append(ident)
        return (PAYLOAD, dicts.zdict(PAYLOAD, 1)) if ident == 1 else None

    assert decode_payload(with_trained, root.child(loader)) == text
    assert decode_payload(with_trained, root.child(None)) == text  # cached in the root
    assert loads == [1]


def test_a_child_publishes_what_it_trained_only_when_told() -> None:
    root = Dictionaries()
    child = root.child(None)
    child.add(5, PAYLOAD, b"x" * 2000)
    assert child.newest(PAYLOAD) == 5
    assert root.newest(PAYLOAD) == 0
    child.publish()
    assert root.newest(PAYLOAD) == 5
    assert root.newest(RESPONSE) == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-3],  # truncated
        lambda b: b + b"\x00",  # trailing bytes
        lambda b: b"\x02" + b[1:],  # unknown format
        lambda b: b[:1] + b"\xff\xff",  # bad dictionary id / stream
        lambda b: b"",
    ],
)
def test_damaged_payloads_are_a_clear_error(damage: Any) -> None:
    stored = encode_payload('{"d":{"lines":[]},"p":[]}')
    with pytest.raises(ValueError):
        decode_payload(damage(stored))


def test_answers_stored_before_0005_still_read() -> None:
    old = zlib.compress(canonical(ANSWER), 6)
    assert unpack_response(old) == ANSWER
    assert unpack_response(memoryview(old)) == ANSWER
    packer = zlib.compressobj(9, zdict=RESPONSE_ZDICT)
    with_dict = packer.compress(canonical(ANSWER)) + packer.flush()
    assert unpack_response(with_dict) == ANSWER


def test_packed_answer_is_smaller_than_plain_zlib() -> None:
    packed = pack_response(ANSWER)
    assert unpack_response(packed) == ANSWER
    assert len(packed) < len(zlib.compress(canonical(ANSWER), 6))


def test_missing_answers() -> None:
    assert unpack_response(b"") == {}
    assert unpack_response(None) == {}
    assert unpack_response("{}") == {}


@given(st.uuids().map(str) | texts)
def test_ids_round_trip_and_uuids_take_16_bytes(value: str) -> None:
    stored = id_key(value)
    assert id_text(stored) == value
    assert isinstance(stored, bytes) == (
        len(value) == 36 and value == value.lower() and value.count("-") == 4 and _is_uuid(value)
    )
    if isinstance(stored, bytes):
        assert len(stored) == 16


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@given(st.uuids().map(str) | texts, texts)
def test_lot_ids_round_trip(head: str, program: str) -> None:
    for lot_id in (f"{head}/{program}", head):
        assert lot_text(lot_key(lot_id, program), program) == lot_id


def test_a_uuid_lot_of_its_program_is_16_bytes() -> None:
    lot = "01a209d2-42a6-785b-aacf-12d90a2435c5/points"
    assert lot_key(lot, "points") == bytes.fromhex("01a209d242a6785baacf12d90a2435c5")
    assert lot_key(lot, "tiers") == lot  # not this program's id form: kept as text
    assert lot_key(lot.upper(), "points") == lot.upper()


@given(aware_times | st.datetimes())
def test_times_round_trip_exactly(value: datetime) -> None:
    back = time_value(time_key(value))
    assert back == value or value.tzinfo is None
    assert back.isoformat() == value.isoformat()
    assert back.utcoffset() == value.utcoffset()
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        assert isinstance(time_key(value), int)


def test_a_time_of_unknown_form_is_refused() -> None:
    with pytest.raises(ValueError):
        time_value(b"\x00" * 8)  # type: ignore[arg-type]


# -- 0006_events: event columns and lot times -------------------------------------------------

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN, infinities, -0.0: canonical JSON tells them apart, so must we
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(aware_times.map(lambda t: t.isoformat()) | texts)
def test_event_times_round_trip_exactly(text: str) -> None:
    stored = at_key(text)
    assert at_text(stored) == text
    if isinstance(stored, int):
        assert datetime.fromisoformat(text).utcoffset() == timedelta(0)


def test_a_utc_event_time_is_an_integer_and_others_stay_text() -> None:
    assert at_key("2026-11-24T00:22:43.377006+00:00") == 1_795_479_763_377_006
    assert at_key("2026-11-24T00:22:43+00:00") == 1_795_479_763_000_000
    for text in ("2026-11-24T01:22:43+01:00", "2026-11-24T00:22:43.377+00:00", "2026-11-24"):
        assert at_key(text) == text
    with pytest.raises(ValueError):
        at_text(b"\x00")  # type: ignore[arg-type]


@given(st.sampled_from([k.value for k in Kind]) | texts)
def test_event_kinds_round_trip(kind: str) -> None:
    stored = kind_key(kind)
    assert kind_text(stored) == kind
    assert isinstance(stored, int) == (kind in {k.value for k in Kind})


def test_kind_codes_are_frozen() -> None:
    assert [KIND_CODES[k.value] for k in Kind] == list(range(1, 11))
    with pytest.raises(ValueError):
        kind_text(99)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=16, max_size=16) | texts,
    aware_times | st.datetimes(),
    st.none() | aware_times | st.datetimes(),
)
def test_lot_times_round_trip_exactly(
    lot: bytes | str, earned: datetime, expires: datetime | None
) -> None:
    if (earned.tzinfo is None) != (expires is None or expires.tzinfo is None):
        expires = None  # a lot's times are both aware or both naive
    stored = earned_key(earned, lot)
    back = earned_value(stored, lot)
    assert back.isoformat() == earned.isoformat()
    end = expires_value(expires_key(expires, earned), back)
    assert (None if end is None else end.isoformat()) == (
        None if expires is None else expires.isoformat()
    )


def test_lot_times_are_small_integers_for_a_lot_made_when_it_was_earned() -> None:
    lot = bytes.fromhex("01a20aeeb3817c288578afcb9ba09d54")  # a UUIDv7: ms 0x01a20aeeb381
    earned = datetime(2026, 11, 24, 0, 22, 25, 409175, tzinfo=UTC)
    assert earned_key(earned, lot) == 175  # microseconds after the id's millisecond
    assert expires_key(earned + timedelta(days=365), earned) == 365 * 4 + 2
    assert expires_key(earned + timedelta(seconds=90), earned) == 90 * 4 + 1
    assert expires_key(earned + timedelta(microseconds=7), earned) == 7 * 4
    with pytest.raises(ValueError):
        expires_value(3, earned)  # no such unit


@given(json_like)
def test_canonical_is_json_dumps_with_the_chain_options(value: Any) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(value) == expected.encode()
