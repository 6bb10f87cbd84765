"""Loyalty card codes: prefix + 12-digit serial + Luhn check digit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos_loyalty.domain.cardcode import (
    CardCodeError,
    check_digit,
    is_valid_card_code,
    make_card_code,
    normalise_card_code,
)

serials = st.integers(min_value=0, max_value=10**12 - 1)


def _luhn_ok(digits: str) -> bool:
    """Independent Luhn check, written the other way round (from the left)."""
    total = 0
    parity = len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def test_known_check_digits() -> None:
    # 79927398713 is the textbook Luhn example (payload 7992739871, check digit 3);
    # leading zeros do not change a Luhn digit.
    assert check_digit("007992739871") == "3"
    assert check_digit("000000000000") == "0"
    assert make_card_code("PL", 0) == "PL0000000000000"
    assert make_card_code("PL", 1) == "PL0000000000018"
    assert make_card_code("pl", 123456) == "PL0000001234566"
    assert make_card_code("PL", 10**12 - 1) == "PL9999999999992"


@given(serials)
def test_every_serial_gives_a_valid_code(serial: int) -> None:
    code = make_card_code("PL", serial)
    assert len(code) == 15 and code.startswith("PL")
    assert int(code[2:14]) == serial
    assert _luhn_ok(code[2:])
    assert code[14] == check_digit(code[2:14])
    assert is_valid_card_code(code, "PL")
    assert normalise_card_code(code, "PL") == code
    assert normalise_card_code(code[2:], "PL") == code  # digits only: prefix added
    assert normalise_card_code(code.lower(), "pl") == code


@given(serials, st.integers(min_value=2, max_value=14), st.integers(min_value=1, max_value=9))
def test_any_single_digit_change_is_invalid(serial: int, position: int, delta: int) -> None:
    code = make_card_code("PL", serial)
    changed_digit = str((int(code[position]) + delta) % 10)
    changed = code[:position] + changed_digit + code[position + 1 :]
    assert not is_valid_card_code(changed, "PL")
    with pytest.raises(CardCodeError, match="wrong check digit"):
        normalise_card_code(changed, "PL")


@given(serials, st.integers(min_value=2, max_value=13))
def test_adjacent_swaps_are_caught_except_09(serial: int, position: int) -> None:
    code = make_card_code("PL", serial)
    a, b = code[position], code[position + 1]
    swapped = code[:position] + b + a + code[position + 2 :]
    if a == b or {a, b} == {"0", "9"}:
        return  # Luhn's known blind spot
    assert not is_valid_card_code(swapped, "PL")


@pytest.mark.parametrize(
    "scanned",
    [
        "PL0000001234566",
        "pl0000001234566",
        " PL0000001234566\r\n",
        "PL 0000 0012 3456 6",
        "PL-0000-0012-3456-6",
        "PL\u20130000\u20130012\u201334566",  # en dashes from a word processor
        "\uff30\uff2c\uff10\uff10\uff10\uff10\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff16",
        "0000001234566",
        "0000 0012 3456 6",
        "\t0000-0012-3456-6 ",
    ],
)
def test_normalisation(scanned: str) -> None:
    assert normalise_card_code(scanned, "PL") == "PL0000001234566"
    assert normalise_card_code(scanned, "pl") == "PL0000001234566"


@pytest.mark.parametrize(
    ("scanned", "message"),
    [
        ("", "card code is empty"),
        ("  - ", "card code is empty"),
        ("XY0000001234566", "card code XY00… does not start with the prefix PL"),
        ("P0000001234566", "card code P000… does not start with the prefix PL"),
        ("PL000000123456", "card code PL00… has 12 digits, expected 13"),
        ("PL000000123456600", "card code PL00… has 15 digits, expected 13"),
        ("000000123456", "card code 0000… has 12 digits, expected 13"),
        ("PL00000O1234566", "card code PL00… must be PL followed by digits only"),
        ("PL000000123456X", "card code PL00… must be PL followed by digits only"),
        ("PL0000001234567", "card code PL00… has a wrong check digit"),
        ("0000001234567", "card code 0000… has a wrong check digit"),
        ("PL", "card code PL has 0 digits, expected 13"),
    ],
)
def test_error_messages(scanned: str, message: str) -> None:
    with pytest.raises(CardCodeError) as info:
        normalise_card_code(scanned, "PL")
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_error_message_never_echoes_the_whole_scan() -> None:
    track2 = ";4111111111111111=29121010000000000000?"
    with pytest.raises(CardCodeError) as info:
        normalise_card_code(track2, "PL")
    assert "4111111111111111" not in str(info.value)
    assert "\n" not in str(info.value)


def test_is_valid_card_code_is_strict() -> None:
    assert is_valid_card_code("PL0000001234566", "PL")
    assert is_valid_card_code("PL0000001234566", "pl")
    assert not is_valid_card_code("pl0000001234566", "PL")
    assert not is_valid_card_code("0000001234566", "PL")
    assert not is_valid_card_code("PL 0000001234566", "PL")
    assert not is_valid_card_code("XY0000001234566", "PL")
    assert not is_valid_card_code("PL000000123456", "PL")
    assert not is_valid_card_code("PL\u0660000001234566", "PL")  # Arabic-Indic zero
    assert not is_valid_card_code("", "PL")


def test_longer_prefixes_work() -> None:
    code = make_card_code("ACME", 42)
    assert code == "ACME" + "000000000042" + check_digit("000000000042")
    assert normalise_card_code(code[4:], "ACME") == code
    assert not is_valid_card_code(code, "AC")


@pytest.mark.parametrize("serial", [-1, 10**12])
def test_serial_out_of_range(serial: int) -> None:
    with pytest.raises(CardCodeError, match="between 0 and 999999999999"):
        make_card_code("PL", serial)


def test_serial_must_be_an_int() -> None:
    with pytest.raises(CardCodeError, match="integer"):
        make_card_code("PL", True)


@pytest.mark.parametrize("serial12", ["12345678901", "1234567890123", "12345678901X", ""])
def test_check_digit_wants_12_digits(serial12: str) -> None:
    with pytest.raises(CardCodeError, match="exactly 12 digits"):
        check_digit(serial12)


@pytest.mark.parametrize("prefix", ["", "P1", "PÅ", "P L"])
def test_bad_prefix_is_a_programming_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix must be ASCII letters"):
        make_card_code(prefix, 1)
    with pytest.raises(ValueError, match="prefix must be ASCII letters"):
        normalise_card_code("0000001234566", prefix)
