"""Payment-card detection (invariant 10, PCI DSS 3.3.1.1)."""

from __future__ import annotations

import pickle
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.payment_guard import (
    PaymentCardRejected,
    carries_payment_card,
    guard,
    luhn_valid,
)

# Published test PANs of the networks (not real accounts).
TEST_PANS = [
    "4111111111111111",  # Visa
    "5555555555554444",  # Mastercard 51-55
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # Amex, 15 digits
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "30569309025904",  # Diners, 14 digits
    "6200000000000005",  # UnionPay
    "4222222222222",  # Visa, 13 digits (not a valid EAN-13)
]

MESSAGE = "payment card data refused: it is never stored or logged"


def _luhn_complete(body: str) -> str:
    """``body`` plus the digit that makes it Luhn-valid."""
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable")


# --- luhn_valid -------------------------------------------------------------------------


@pytest.mark.parametrize("pan", TEST_PANS)
def test_luhn_accepts_test_pans(pan: str) -> None:
    assert luhn_valid(pan)


@pytest.mark.parametrize(
    "digits", ["4111111111111112", "", "0", "4111 1111 1111 1111", "41111111111111a1", "٤١١١"]
)
def test_luhn_rejects_wrong_or_non_digit(digits: str) -> None:
    assert not luhn_valid(digits)


# --- bare numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("pan", TEST_PANS)
def test_bare_pan_is_a_payment_card(pan: str) -> None:
    assert carries_payment_card(pan)
    assert carries_payment_card(f"  {pan}\r\n")


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "card: 5555 5555 5555 4444 exp 12/29",
        "0 4111 1111 1111 1111 12 29",  # PAN inside a longer grouped run
        "https://example.test/pay?pan=4111111111111111&x=1",
    ],
)
def test_grouped_or_embedded_pan_is_a_payment_card(text: str) -> None:
    assert carries_payment_card(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "5555555555554445",
        "1234567812345670",  # Luhn-valid, but no network's IIN (1)
        "9999999999999995",  # Luhn-valid, IIN 9
        "0000001234566",  # Luhn-valid (a bare loyalty code), leading 0
        "3111111111111113",  # Luhn-valid, 31 is not a network range
        "411111111111",  # 12 digits: too short
        "41111111111111111113",  # 20 digits, ungrouped: some other barcode
        "PL4000000000014",  # a loyalty code: letters touch the digits
        "4111111111111111X",
        "",
        "hello world",
    ],
)
def test_not_a_payment_card(text: str) -> None:
    digits = "".join(ch for ch in text if ch.isdigit())
    if text in {"3111111111111113", "0000001234566", "9999999999999995", "1234567812345670"}:
        assert luhn_valid(digits)  # these fail only for their IIN
    assert not carries_payment_card(text)


@pytest.mark.parametrize(
    "ean13",
    [
        "4006381333931",  # a real EAN-13; not Luhn-valid
        "4006381333924",  # valid EAN-13 AND Luhn-valid, Visa range: treated as a barcode
        "5901234123457",  # Polish EAN-13
        "9780306406157",  # ISBN-13
    ],
)
def test_ean13_barcodes_are_not_payment_cards(ean13: str) -> None:
    assert not carries_payment_card(ean13)


def test_ean13_that_is_also_luhn_valid_is_the_ambiguous_case() -> None:
    assert luhn_valid("4006381333924")
    # Same digits but not a valid EAN-13: a bare 13-digit Visa-range Luhn number is refused.
    assert luhn_valid("4000000000014")
    assert carries_payment_card("4000000000014")


# --- tracks ---------------------------------------------------------------------------

TRACK1 = "%B4111111111111111^DOE/JOHN^2912101000000000000000000000000?"
TRACK2 = ";4111111111111111=29121010000000000000?"


@pytest.mark.parametrize(
    "text",
    [
        TRACK1,
        TRACK1[:-1],  # no end sentinel
        TRACK2,
        TRACK2[:-1],
        TRACK2[1:],  # no start sentinel either
        TRACK1 + TRACK2,  # a full swipe, both tracks
        "%E?" + TRACK2,  # bad track 1, good track 2
        TRACK1 + ";E?",
        "%b4111111111111111^doe/john^2912101?",  # Caps Lock on a keyboard-wedge reader
        "%B3782 822463 10005^AMEX/TEST^2912?",  # spaces inside the track-1 PAN
        "%B378282246310005^^2912?",  # empty name
        "junk before " + TRACK1 + " junk after",
    ],
)
def test_track_data_is_a_payment_card(text: str) -> None:
    assert carries_payment_card(text)


def test_track1_format_b_does_not_need_luhn() -> None:
    # Format code B means "financial card"; the structure alone decides.
    assert carries_payment_card("%B1234567890123456^DOE/JOHN^2912101?")


@pytest.mark.parametrize(
    "text",
    [
        "%E?",
        ";E?",
        "%E?;E?",
        ";1234567890123456=2912101?",  # non-Luhn PAN on track 2: a loyalty track
        "%A4111111111111112^DOE/JOHN^2912?",  # not format B, and not Luhn-valid
        "%E?%E?",
        ";123456=2912?",  # too short for a PAN
    ],
)
def test_not_track_data(text: str) -> None:
    assert not carries_payment_card(text)


def test_track2_pan_must_be_luhn_valid() -> None:
    assert not luhn_valid("1234567890123456")
    assert not carries_payment_card(";1234567890123456=2912101?")
    assert carries_payment_card(";" + _luhn_complete("123456789012345") + "=2912101?")


# --- own prefixes ---------------------------------------------------------------------


def test_own_prefixes_exempt_the_shops_own_ranges() -> None:
    own_track2 = ";" + _luhn_complete("990012345678901") + "=2912101?"
    assert carries_payment_card(own_track2)
    assert not carries_payment_card(own_track2, own_prefixes=("990012",))
    assert not carries_payment_card(own_track2, own_prefixes=["12", "9900"])
    own_track1 = "%B6274000000000006^MEMBER/ANNA^2912?"
    assert carries_payment_card(own_track1)
    assert not carries_payment_card(own_track1, ("627400",))
    assert luhn_valid("6274000000000006") and carries_payment_card("6274000000000006")
    assert not carries_payment_card("6274000000000006", ("627400",))


def test_own_prefixes_do_not_exempt_other_cards() -> None:
    text = ";" + _luhn_complete("990012345678901") + "=2912101?" + TRACK2
    assert carries_payment_card(text, ("990012",))
    assert carries_payment_card("4111111111111111", ("990012",))


@pytest.mark.parametrize("bad", [("",), ("99a",), ("4 1",)])
def test_bad_own_prefixes_are_refused(bad: tuple[str, ...]) -> None:
    # An empty prefix would exempt every card.
    with pytest.raises(ValueError, match="own_prefixes"):
        carries_payment_card("4111111111111111", bad)


def test_own_prefixes_as_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match="own_prefixes"):
        carries_payment_card("4111111111111111", "4")


# --- guard and the exception ----------------------------------------------------------


def test_guard_returns_text_unchanged() -> None:
    for text in ["PL0000001234567", "4006381333931", "%E?", ""]:
        assert guard(text) is text


def test_guard_refuses_with_a_fixed_message() -> None:
    with pytest.raises(PaymentCardRejected) as info:
        guard(TRACK1)
    exc = info.value
    assert str(exc) == MESSAGE
    assert isinstance(exc, ValueError)
    assert exc.code == "payment_card_rejected"
    assert exc.__cause__ is None and exc.__suppress_context__
    restored = pickle.loads(pickle.dumps(exc))
    assert isinstance(restored, PaymentCardRejected) and str(restored) == MESSAGE


_NETWORK_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "35", "36", "62"]


@st.composite
def payment_texts(draw: st.DrawFn) -> tuple[str, str]:
    """(text carrying a card, its PAN) in one of the formats the guard must catch."""
    prefix = draw(st.sampled_from(_NETWORK_PREFIXES))
    length = draw(st.integers(min_value=14, max_value=19))
    body = prefix + draw(
        st.text(
            alphabet="0123456789",
            min_size=length - 1 - len(prefix),
            max_size=length - 1 - len(prefix),
        )
    )
    pan = _luhn_complete(body)
    name = draw(st.from_regex(r"[A-Z]{1,12}/[A-Z]{1,12}", fullmatch=True))
    expiry = draw(st.from_regex(r"[0-9]{2}(0[1-9]|1[0-2])", fullmatch=True))
    tail = draw(st.text(alphabet="0123456789", max_size=20))
    text = draw(
        st.sampled_from(
            [
                f"%B{pan}^{name}^{expiry}{tail}?",
                f";{pan}={expiry}{tail}?",
                f"%B{pan}^{name}^{expiry}{tail}?;{pan}={expiry}{tail}?",
                pan,
                " ".join(pan[i : i + 4] for i in range(0, len(pan), 4)),
            ]
        )
    )
    return text, pan


@given(payment_texts())
def test_rejection_never_reveals_the_input(case: tuple[str, str]) -> None:
    text, pan = case
    assert carries_payment_card(text)
    with pytest.raises(PaymentCardRejected) as info:
        guard(text)
    exc = info.value
    rendered = [
        str(exc),
        repr(exc),
        repr(exc.args),
        "".join(traceback.format_exception(exc)),
    ]
    for shown in rendered:
        assert pan not in shown
        assert pan[-4:] + "=" not in shown
        assert text not in shown
    # The message itself contains no digit at all, so no fragment of a PAN can leak.
    assert not any(ch.isdigit() for ch in str(exc) + repr(exc))
