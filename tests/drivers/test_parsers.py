"""Pure parsers: AIM identifiers, framing, ISO/IEC 7813 swipes and parse_scan."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.aim import aim_symbology, normalise_gtin, split_aim
from drivers.debounce import Debouncer
from drivers.framing import Framer, FramingConfig
from drivers.model import CardRead, Symbology
from drivers.msr import MsrLayout, looks_like_swipe, loyalty_id, lrc_char, parse_swipe
from drivers.parse import ParseError, parse_scan, symbologies
from tests.drivers.logcapture import all_logs, assert_not_logged

# --- AIM identifiers (ISO/IEC 15424 table of code characters and modifiers) ---------------

AIM_TABLE = [
    (b"]Q1https://example.com/c/PL1", "]Q1", Symbology.QR, "https://example.com/c/PL1"),
    (b"]E04006381333931", "]E0", Symbology.EAN13, "4006381333931"),
    (b"]E0036000291452", "]E0", Symbology.EAN13, "0036000291452"),  # UPC-A, 12 digits
    (b"]E496385074", "]E4", Symbology.EAN8, "96385074"),
    (b"]C0PL0000001234567", "]C0", Symbology.CODE128, "PL0000001234567"),
    (b"]C101095011010209171719050810ABCD1234", "]C1", Symbology.GS1_128, None),
    (b"]A0CODE39TEST", "]A0", Symbology.CODE39, "CODE39TEST"),
    (b"]d2010950110153000317", "]d2", Symbology.DATAMATRIX, "010950110153000317"),
    (b"]d1hello", "]d1", Symbology.DATAMATRIX, "hello"),
    (b"]L2pdf data", "]L2", Symbology.PDF417, "pdf data"),
    (b"]z0aztec", "]z0", Symbology.AZTEC, "aztec"),
    (b"]I11234567890", "]I1", Symbology.ITF, "1234567890"),
    (b"]F0A12345B", "]F0", Symbology.CODABAR, "A12345B"),
    (b"]e0databar", "]e0", Symbology.UNKNOWN, "databar"),  # GS1 DataBar: not in the model
]


@pytest.mark.parametrize(("data", "aim", "symbology", "text"), AIM_TABLE)
def test_aim_table(data: bytes, aim: str, symbology: Symbology, text: str | None) -> None:
    read = parse_scan(data, "s")
    assert isinstance(read, CardRead)
    assert read.aim == aim
    assert read.symbology is symbology
    assert read.text == (text if text is not None else data[3:].decode())
    assert read.raw == data


def test_aim_details() -> None:
    assert split_aim(b"]Q1x") == ("]Q1", b"x")
    assert split_aim(b"]Q") == (None, b"]Q")
    assert split_aim(b"Q1]x") == (None, b"Q1]x")
    assert aim_symbology("]X0") is Symbology.UNKNOWN
    assert aim_symbology("bad") is Symbology.UNKNOWN
    # UPC-E 04252614 expands to UPC-A 042100005264 (GS1 General Specifications example).
    assert normalise_gtin("04252614", Symbology.EAN13) == "0042100005264"
    assert normalise_gtin("04252615", Symbology.EAN13) == "04252615"  # bad check digit
    assert normalise_gtin("abc", Symbology.EAN13) == "abc"
    assert normalise_gtin("036000291452", Symbology.CODE128) == "036000291452"


def test_no_aim_uses_default_symbology() -> None:
    read = parse_scan(b"PL0000001234567", "s", default_symbology=Symbology.KEYBOARD)
    assert isinstance(read, CardRead)
    assert read.symbology is Symbology.KEYBOARD and read.aim is None


def test_formats_filter() -> None:
    only_qr = symbologies(["qr"])
    assert isinstance(parse_scan(b"]Q1x", "s", formats=only_qr), CardRead)
    err = parse_scan(b"]C0x", "s", formats=only_qr)
    assert isinstance(err, ParseError) and err.code == "format_not_enabled"
    with pytest.raises(ValueError):
        symbologies(["qr", "nope"])


@pytest.mark.parametrize("data", [b"", b"\r\n", b"   ", b"\x00\x00"])
def test_empty_is_a_parse_error(data: bytes) -> None:
    err = parse_scan(data, "s")
    assert isinstance(err, ParseError) and err.code == "empty"


def test_too_long() -> None:
    err = parse_scan(b"x" * 5000, "s")
    assert isinstance(err, ParseError) and err.code == "too_long"


def test_non_utf8_bytes_are_latin1() -> None:
    read = parse_scan(b"]Q1caf\xe9", "s")
    assert isinstance(read, CardRead) and read.text == "caf\u00e9"


# --- framing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "stream", "frames"),
    [
        ("cr", b"abc\rdef\r", [b"abc", b"def"]),
        ("cr", b"abc\r\ndef\r\n", [b"abc", b"def"]),
        ("lf", b"abc\ndef\n", [b"abc", b"def"]),
        ("crlf", b"abc\r\ndef\r\n", [b"abc", b"def"]),
        ("crlf", b"a\rb\r\n", [b"a\rb"]),
        ("tab", b"abc\tdef\t", [b"abc", b"def"]),
        ("cr", b"\r\r\rabc\r", [b"abc"]),
    ],
)
def test_suffix_framing(framing: str, stream: bytes, frames: list[bytes]) -> None:
    framer = Framer(FramingConfig(framing=framing))
    out: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time: the worst chunking
        out += framer.feed(stream[i : i + 1], 0.0)
    assert out == frames


def test_prefix_drops_noise_before_it() -> None:
    framer = Framer(FramingConfig(framing="cr", prefix=b"\x02"))
    assert framer.feed(b"noise\x02abc\r\x02def\r", 0.0) == [b"abc", b"def"]
    assert framer.feed(b"nothing framed\r", 0.0) == []


def test_inter_byte_timeout_framing() -> None:
    framer = Framer(FramingConfig(framing="none", inter_byte_timeout=0.05))
    assert framer.feed(b"abc", 0.0) == []
    assert framer.feed(b"def", 0.01) == []
    assert framer.poll(0.03) == []
    assert framer.deadline() == pytest.approx(0.06)
    assert framer.poll(0.07) == [b"abcdef"]
    assert framer.feed(b"x", 1.0) == []
    assert framer.feed(b"y", 2.0) == [b"x"]  # silence before new data completes the old frame
    assert framer.flush() == [b"y"]


def test_stale_half_frame_is_dropped() -> None:
    framer = Framer(FramingConfig(framing="cr", stale_timeout=0.5))
    assert framer.feed(b"line noise", 0.0) == []
    assert framer.feed(b"PL123\r", 1.0) == [b"PL123"]
    assert framer.dropped == 1


def test_max_length() -> None:
    framer = Framer(FramingConfig(framing="cr", max_length=10))
    assert framer.feed(b"x" * 20, 0.0) == []
    assert framer.feed(b"ok\r", 0.0) == [b"ok"]


def test_framing_config_validated() -> None:
    with pytest.raises(ValueError):
        FramingConfig(framing="semicolon")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\r" not in b), max_size=8),
    st.data(),
)
def test_framing_any_chunking_gives_the_same_frames(
    scans: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(s + b"\r" for s in scans)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = Framer(FramingConfig(framing="cr", stale_timeout=0))
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[last:cut], 0.0)
        last = cut
    assert out == [s.strip(b"\r\n") for s in scans if s.strip(b"\r\n")]


# --- ISO/IEC 7813 --------------------------------------------------------------------------

# The ISO 7813 / ABA example layouts, with a loyalty (non-financial) account number.
T1 = "%A9900120000000001^LOYAL/CUSTOMER^9912?"
T2 = ";9900120000000001=9912?"
T3 = (
    ";011234567890123445=724724100000000000030300XXXX040400099010="
    "************************==1=0000000000000000?"
)


def test_three_tracks() -> None:
    swipe = parse_swipe(T1 + T2 + T3.replace("X", "0").replace("*", "0") + "\r")
    assert [t.number for t in swipe.tracks] == [1, 2, 3]
    assert all(t.ok for t in swipe.tracks)
    assert swipe.track(2) is not None and swipe.track(2).content == T2[1:-1]  # type: ignore[union-attr]
    assert loyalty_id(swipe) == (2, "9900120000000001")


def test_track1_id_without_track2() -> None:
    assert loyalty_id(parse_swipe(T1)) == (1, "9900120000000001")


@pytest.mark.parametrize(
    ("swipe_text", "expected"),
    [
        ("%E?" + T2, (2, "9900120000000001")),  # track 1 failed, track 2 delivered
        (T1 + ";E?", (1, "9900120000000001")),
        ("%E?;E?+E?", None),
    ],
)
def test_error_markers(swipe_text: str, expected: tuple[int, str] | None) -> None:
    swipe = parse_swipe(swipe_text)
    assert loyalty_id(swipe) == expected
    assert any(t.error == "unreadable" for t in swipe.tracks)


def test_all_tracks_failed_is_a_parse_error() -> None:
    err = parse_scan(b"%E?;E?+E?\r", "msr")
    assert isinstance(err, ParseError) and err.code == "msr_unreadable"


def test_lrc_verified_when_present() -> None:
    content = T2[1:-1]
    good = ";" + content + "?" + lrc_char(2, content)
    track = parse_swipe(good).track(2)
    assert track is not None and track.ok and track.lrc is True
    wrong = chr(ord(lrc_char(2, content)) ^ 1)
    bad = parse_swipe(";" + content + "?" + wrong).track(2)
    assert bad is not None and bad.error == "lrc_mismatch"
    missing = parse_swipe(";" + content + "?", lrc="required").track(2)
    assert missing is not None and missing.error == "lrc_mismatch"
    t1 = T1[1:-1]
    track1 = parse_swipe("%" + t1 + "?" + lrc_char(1, t1) + T2).track(1)
    assert track1 is not None and track1.lrc is True


def test_lrc_known_value() -> None:
    # XOR of the 4-bit values of ";", "1", "2", "3", "?" = 11 ^ 1 ^ 2 ^ 3 ^ 15 = 4 -> "4".
    assert lrc_char(2, "123") == "4"


def test_malformed_track() -> None:
    swipe = parse_swipe(";12AB=34?" + T1)
    assert swipe.track(2) is not None and swipe.track(2).error == "malformed"  # type: ignore[union-attr]
    assert loyalty_id(swipe) == (1, "9900120000000001")
    assert parse_swipe(";12345").tracks[0].error == "malformed"


def test_custom_layout() -> None:
    layout = MsrLayout.from_mapping({"track": 3, "pattern": r"^01(?P<id>\d{8})"})
    swipe = parse_swipe(";5555=1?;0112345678999?")
    assert loyalty_id(swipe, layouts=[layout]) == (3, "12345678")
    other = parse_swipe(";5555=1?")
    assert loyalty_id(other, layouts=[layout]) is None  # not one of the shop's cards
    with pytest.raises(ValueError):
        MsrLayout.from_mapping({"track": 4, "pattern": "x"})


def test_swipe_through_parse_scan() -> None:
    read = parse_scan((T1 + T2 + "\r").encode(), "msr")
    assert isinstance(read, CardRead)
    assert read.text == "9900120000000001" and read.symbology is Symbology.MSR_TRACK2
    assert looks_like_swipe(T2) and not looks_like_swipe("PL123")


# --- the payment-card guard in parse_scan ---------------------------------------------------

PAN = "4111111111111111"
PAYMENT_SWIPES = [
    f"%B{PAN}^DOE/JOHN^2512101000000000?;{PAN}=25121010000000000?",
    f";{PAN}=25121010000000000?",
    f"%B{PAN}^DOE/JOHN^2512101000000000?",
    f"%E?;{PAN}=25121010000000000?",
    f"%b{PAN}^doe/john^2512101?",  # caps lock on a keyboard MSR
    f"]C0{PAN}",
    f"{PAN[:8]}\x00{PAN[8:]}",  # split by a NUL
]


@pytest.mark.parametrize("swipe", PAYMENT_SWIPES)
def test_payment_card_rejected_and_never_logged(swipe: str) -> None:
    with all_logs() as records:
        read = parse_scan(swipe.encode(), "msr")
    assert isinstance(read, CardRead)
    assert read.rejected == "payment_card"
    assert read.text == "" and read.raw == b""
    assert PAN not in repr(read)
    assert_not_logged(records, PAN, PAN[:12], PAN[-10:])


def test_own_prefix_track2_yields_loyalty_id() -> None:
    # Luhn-valid and track-2 shaped, but inside the shop's own range.
    own_pan = "9900120000000003"
    read = parse_scan(f";{own_pan}=2512?".encode(), "msr", own_prefixes=("990012",))
    assert isinstance(read, CardRead) and read.rejected is None and read.text == own_pan


# --- debouncing ----------------------------------------------------------------------------


def _read(text: str, at: float, source: str = "a") -> CardRead:
    return CardRead(text, text.encode(), Symbology.QR, source, at)


def test_debounce_window() -> None:
    d = Debouncer(1.0)
    assert d.accept(_read("x", 0.0))
    assert not d.accept(_read("x", 0.5))
    assert d.accept(_read("y", 0.6))  # another code passes at once
    assert d.accept(_read("x", 0.5, source="b"))  # another reader too
    assert d.accept(_read("x", 1.01))
    assert Debouncer(0).accept(_read("x", 0)) and Debouncer(0).accept(_read("x", 0))
    with pytest.raises(ValueError):
        Debouncer(-1)


# --- fuzz: any bytes -> a read, a parse error or a rejection; never an exception ------------

PANS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]
noise = st.binary(max_size=30)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_scan_any_bytes(data: bytes) -> None:
    result = parse_scan(data, "fuzz", own_prefixes=("990012",))
    assert isinstance(result, CardRead | ParseError)
    parse_swipe(data.decode("latin-1"), lrc="required")
    split_aim(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PANS),
    st.sampled_from(
        [
            "%B{p}^{n}^2512101?",
            ";{p}=2512101?",
            "%B{p}^{n}^2512?;{p}=2512?",
            "%E?;{p}=2512?",
            "]E0{p}",
            "{p}",
        ]
    ),
    noise,
    noise,
    st.text(alphabet="ABCDEFGHIJ /", max_size=20),
)
def test_fuzz_payment_data_never_escapes(
    pan: str, layout: str, before: bytes, after: bytes, name: str
) -> None:
    text = layout.format(p=pan, n=name).encode()
    data = before.replace(b"\x00", b"") + b"\r" + text + b"\r" + after
    with all_logs() as records:
        result = parse_scan(data, "fuzz")
    if isinstance(result, CardRead):
        assert result.rejected == "payment_card", "a payment card got through"
        assert result.text == "" and result.raw == b""
    assert pan not in repr(result)
    assert_not_logged(records, pan)
