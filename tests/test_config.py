"""Configuration loader: the embedded default, every kind of bad input, path resolution."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pos_loyalty.config import (
    ConfigError,
    OfflineLimits,
    ReaderConfig,
    Settings,
    SyncConfig,
    embedded_default_text,
    load_settings,
)
from pos_loyalty.domain.programs import (
    PointsProgram,
    StampBasis,
    StampCardProgram,
    StampReward,
    WelcomeProgram,
)
from pos_loyalty.reader_settings import check_readers

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "shop.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str, *, count: int = 1) -> str:
    """The embedded default with ``old`` replaced by ``new`` (which must occur)."""
    text = embedded_default_text()
    assert old in text, old
    return text.replace(old, new, count)


def load_error(tmp_path: Path, text: str, *, readers: bool = False) -> ConfigError:
    """The error loading ``text`` gives (with ``readers``: the readers' check a command
    that opens them runs, ``reader_settings.check_readers``)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        settings = load_settings(path)
        if readers:
            check_readers(settings)
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert err.file == str(path)
    return err


# --------------------------------------------------------------------------- the default


def test_embedded_default_loads_the_demo_shop() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.source == "<embedded default>"
    assert (s.terminal_id, s.store_id) == ("till-1", "store-1")
    assert (s.shop_name, s.currency, s.card_prefix) == ("Demo Coffee Bar", "EUR", "PL")
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8765)
    assert s.max_body_bytes == 65536
    assert s.max_clock_skew_seconds == 300
    assert s.offline == OfflineLimits(
        points_per_card_per_day=5000, points_per_terminal_per_day=50000
    )
    assert s.sync == SyncConfig(server_url=None, enabled=False, interval_seconds=30)
    assert s.readers == (ReaderConfig(name="keyboard", kind="keyboard", url=None, options={}),)
    assert s.data_dir.is_absolute()

    ps = s.programs
    assert ps.currency == "EUR"
    assert ps.problems() == []
    assert [p.id for p in ps.programs] == [
        "coffee-card",
        "points",
        "welcome",
        # the catalog programs the demo shop runs (issue 3); the others are documented, off
        "tiers",
        "take5",
        "coupon-2off",
        "member-muffin",
        "tote-gift",
        "own-cup",
        "referral",
    ]
    assert ps.get("coffee-card") == StampCardProgram(
        id="coffee-card",
        label="Coffee card",
        categories=frozenset({"coffee"}),
        skus=frozenset(),
        per=StampBasis.ITEM,
        required=9,
        reward=StampReward.FREE_ITEM,
        reward_amount=0,
        reward_label="Free coffee",
    )
    assert ps.get("points") == PointsProgram(
        id="points",
        label="Points",
        points_per_unit=1,
        unit=100,
        point_value=1,
        expiry_days=365,
        excluded_categories=frozenset({"gift-card"}),
        redeemable=True,
    )
    assert ps.get("welcome") == WelcomeProgram(
        id="welcome", label="Welcome gift", points=50, points_program="points"
    )


def test_settings_are_immutable() -> None:
    s = load_settings()
    with pytest.raises(AttributeError):
        s.api_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.readers[0].options["x"] = 1  # type: ignore[index]


def test_file_copy_of_the_default_loads_identically_apart_from_source(tmp_path: Path) -> None:
    path = write(tmp_path, embedded_default_text())
    from_file = load_settings(path, data_dir=tmp_path)
    embedded = load_settings(data_dir=tmp_path)
    assert from_file.source == str(path)
    assert from_file == Settings(**{**embedded.__dict__, "source": str(path)})


def test_top_level_example_is_the_packaged_file() -> None:
    top = REPO / "config.example.toml"
    assert top.is_symlink()
    assert top.resolve() == (REPO / "pos_loyalty" / "config.example.toml").resolve()
    assert top.read_text(encoding="utf-8") == embedded_default_text()


def test_minimal_file_uses_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[terminal]\nid = "t9"\n[shop]\ncurrency = "CHF"\n'))
    assert (s.terminal_id, s.currency, s.api_port) == ("t9", "CHF", 8765)
    assert [r.kind for r in s.readers] == ["keyboard"]
    assert s.programs.programs == ()


def test_serial_reader_with_options(tmp_path: Path) -> None:
    text = embedded_default_text() + (
        '\n[[readers]]\nname = "scanner"\nkind = "serial"\nurl = "loop://"\n'
        "[readers.options]\nbaudrate = 9600\n"
    )
    s = load_settings(write(tmp_path, text))
    assert s.readers[1] == ReaderConfig(
        name="scanner", kind="serial", url="loop://", options={"baudrate": 9600}
    )


def test_sync_server_url(tmp_path: Path) -> None:
    text = edited("enabled = false", "enabled = true")
    text = text.replace('server_url = ""', 'server_url = "http://127.0.0.1:8766"')
    s = load_settings(write(tmp_path, text))
    assert s.sync == SyncConfig(
        server_url="http://127.0.0.1:8766", enabled=True, interval_seconds=30
    )


# --------------------------------------------------------------------------- data_dir


def test_data_dir_argument_overrides_the_file(tmp_path: Path) -> None:
    text = edited('data_dir = ""', 'data_dir = "/somewhere/else"')
    s = load_settings(write(tmp_path, text), data_dir=tmp_path / "override")
    assert s.data_dir == tmp_path / "override"


def test_relative_data_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = edited('data_dir = ""', 'data_dir = "ledger-data"')
    s = load_settings(write(conf_dir, text))
    assert s.data_dir == conf_dir / "ledger-data"


def test_relative_data_dir_override_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(data_dir=Path("demo"))
    assert s.data_dir == tmp_path / "demo"


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    text = edited('data_dir = ""', f'data_dir = "{tmp_path.as_posix()}/abs"')
    assert load_settings(write(tmp_path, text)).data_dir == tmp_path / "abs"


def test_empty_data_dir_is_the_platform_default() -> None:
    import platformdirs

    expected = Path(platformdirs.user_data_dir("pos-loyalty", appauthor=False))
    assert load_settings().data_dir == expected


# --------------------------------------------------------------------------- bad input


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    text = embedded_default_text()
    lines = text.splitlines()
    target = next(i for i, line in enumerate(lines) if line.startswith("port = "))
    lines[target] = "port 8765"
    err = load_error(tmp_path, "\n".join(lines) + "\n")
    assert err.key == f"line {target + 1}"
    assert "invalid TOML" in err.problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "cannot read" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[shop]\nname = "Caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path)


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        # wrong type
        (
            "required = 9",
            'required = "nine"',
            "programs[0].required",
            "must be a positive integer, got 'nine'",
        ),
        ("port = 8765", 'port = "8765"', "api.port", "got '8765'"),
        ("enabled = false", 'enabled = "no"', "sync.enabled", "must be true or false"),
        (
            "redeemable = true",
            "redeemable = 1",
            "programs[1].redeemable",
            "must be true or false, got 1",
        ),
        (
            'categories = ["coffee"]',
            'categories = "coffee"',
            "programs[0].categories",
            "must be a list",
        ),
        ("expiry_days = 365", "expiry_days = 365.0", "programs[1].expiry_days", "got 365.0"),
        ('name = "Demo Coffee Bar"', "name = 5", "shop.name", "must be text"),
        (
            "points_per_card_per_day = 5000",
            "points_per_card_per_day = true",
            "offline.points_per_card_per_day",
            "got true",
        ),
        # out of range
        (
            "required = 9",
            "required = 0",
            "programs[0].required",
            "must be a positive integer, got 0",
        ),
        ("port = 8765", "port = 0", "api.port", "1 to 65535, got 0"),
        ("port = 8765", "port = 70000", "api.port", "1 to 65535, got 70000"),
        ("max_body_bytes = 65536", "max_body_bytes = -1", "api.max_body_bytes", "positive integer"),
        ("interval_seconds = 30", "interval_seconds = 0", "sync.interval_seconds", "positive"),
        ("region_only = false", 'region_only = "yes"', "sync.region_only", "true or false"),
        (
            "points_per_terminal_per_day = 50000",
            "points_per_terminal_per_day = -5",
            "offline.points_per_terminal_per_day",
            "got -5",
        ),
        ("points = 50", "points = -1", "programs[2].points", "zero or a positive integer, got -1"),
        ('per = "item"', 'per = "day"', "programs[0].per", "one of 'item', 'visit', got 'day'"),
        ('reward = "free_item"', 'reward = "cash"', "programs[0].reward", "got 'cash'"),
        ('kind = "keyboard"', 'kind = "telepathy"', "readers[0].kind", "got 'telepathy'"),
        (
            'kind = "stamps"',
            'kind = "coupons"',
            "programs[0].kind",
            "must be one of 'stamps', 'points', 'welcome'",
        ),
        ('id = "till-1"', 'id = ""', "terminal.id", "must be an id"),
        ('id = "till-1"', 'id = "till 1"', "terminal.id", "must be an id"),
        ('server_url = ""', 'server_url = "127.0.0.1:8766"', "sync.server_url", "http://"),
        # unknown keys
        ("required = 9", "requird = 9", "programs[0].requird", "unknown key 'requird'"),
        ("port = 8765", "port = 8765\nprot = 1", "api.prot", "unknown key 'prot'"),
        ("[offline]", "[offlne]", "offlne", "unknown key 'offlne'"),
        # bad currency
        ('currency = "EUR"', 'currency = "eur"', "shop.currency", "3 capital letters"),
        ('currency = "EUR"', 'currency = "EURO"', "shop.currency", "got 'EURO'"),
        ('currency = "EUR"', "currency = 978", "shop.currency", "got 978"),
        ('card_prefix = "PL"', 'card_prefix = "pl1"', "shop.card_prefix", "capital letters"),
        # missing
        ('currency = "EUR"', "", "shop.currency", "is required"),
        ('id = "till-1"', "", "terminal.id", "is required"),
        ('points_program = "points"', "", "programs[2].points_program", "is required"),
        # duplicate program id / welcome pointing nowhere / other cross-checks
        ('id = "welcome"', 'id = "points"', "programs", "program id 'points' is used twice"),
        (
            'points_program = "points"',
            'points_program = "pointz"',
            "programs",
            "'pointz' is not a points program",
        ),
        (
            'points_program = "points"',
            'points_program = "coffee-card"',
            "programs",
            "not a points program",
        ),
        (
            'categories = ["coffee"]',
            "categories = []",
            "programs",
            "coffee-card: needs at least one category or sku",
        ),
        (
            'reward = "free_item"',
            'reward = "fixed_discount"',
            "programs",
            "reward_amount must be positive",
        ),
        ("enabled = false", "enabled = true", "sync.server_url", "required when sync.enabled"),
    ],
)
def test_bad_value_names_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    err = load_error(tmp_path, edited(old, new))
    assert err.key == key
    assert problem in err.problem
    assert str(err) == f"{err.file}: {key}: {err.problem}"


def test_section_given_as_a_value(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'api = 5\n[terminal]\nid = "t"\n[shop]\ncurrency = "EUR"\n')
    assert err.key == "api"
    assert err.problem == "must be a table, got 5"


def test_top_level_programs_not_tables(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'programs = [1]\n[terminal]\nid = "t"\n[shop]\ncurrency = "EUR"\n')
    assert err.key == "programs[0]"
    assert "must be a [[programs]] table" in err.problem


def test_duplicate_reader_name(tmp_path: Path) -> None:
    text = embedded_default_text() + '\n[[readers]]\nname = "keyboard"\nkind = "keyboard"\n'
    err = load_error(tmp_path, text)
    assert err.key == "readers[1].name"
    assert "used twice" in err.problem


def test_serial_reader_needs_url(tmp_path: Path) -> None:
    text = embedded_default_text() + '\n[[readers]]\nname = "s"\nkind = "serial"\n'
    err = load_error(tmp_path, text)
    assert err.key == "readers[1].url"


SERIAL = '\n[[readers]]\nname = "counter"\nkind = "serial"\nurl = "/dev/ttyACM0"\n'


@pytest.mark.parametrize(
    ("options", "key", "problem"),
    [
        ("baudrat = 115200", "readers[1].options.baudrat", "unknown option 'baudrat'"),
        ('framing = "crr"', "readers[1].options.framing", "must be one of 'cr', 'crlf'"),
        ('baudrate = "fast"', "readers[1].options.baudrate", "must be a whole number"),
        ("baudrate = 0", "readers[1].options.baudrate", "positive whole number"),
        ('parity = "X"', "readers[1].options.parity", "must be one of"),
        ("rtscts = 1", "readers[1].options.rtscts", "must be true or false"),
        ('formats = ["qr", "qrr"]', "readers[1].options.formats", "unknown format 'qrr'"),
        ('lrc = "maybe"', "readers[1].options.lrc", "must be one of 'absent'"),
        ('own_prefixes = ["99x"]', "readers[1].options.own_prefixes", "digit strings"),
    ],
)
def test_bad_reader_setting_is_refused_at_load(
    tmp_path: Path, options: str, key: str, problem: str
) -> None:
    """A typo in a reader's settings never falls back to a default, and is found when the
    file is read, not when the till starts reading cards."""
    err = load_error(
        tmp_path,
        embedded_default_text() + SERIAL + f"[readers.options]\n{options}\n",
        readers=True,
    )
    assert err.key == key
    assert err.problem.startswith("reader 'counter': ")
    assert problem in err.problem


@pytest.mark.parametrize(
    ("block", "key", "problem"),
    [
        ('name = "cam"\nkind = "webcam"\n[readers.options]\nwidht = 640\n', "widht", "webcam"),
        ('name = "k2"\nkind = "keyboard"\n[readers.options]\nbaudrate = 9600\n', "baudrate", ""),
        (
            'name = "w"\nkind = "evdev"\nurl = "/dev/input/event3"\n[readers.options]\n'
            'grab = "yes"\n',
            "grab",
            "true or false",
        ),
        (
            'name = "h"\nkind = "hidraw"\nurl = "/dev/hidraw0"\n[readers.options]\nlayout = "fr"\n',
            "",
            "layout",
        ),
    ],
)
def test_bad_setting_of_other_reader_kinds(
    tmp_path: Path, block: str, key: str, problem: str
) -> None:
    err = load_error(tmp_path, embedded_default_text() + "\n[[readers]]\n" + block, readers=True)
    assert err.key == ("readers[1].options." + key if key else "readers[1]")
    assert problem in err.problem


def test_good_reader_settings_load(tmp_path: Path) -> None:
    text = (
        embedded_default_text()
        + SERIAL
        + (
            '[readers.options]\nbaudrate = 115200\nframing = "crlf"\nformats = ["qr", "code128"]\n'
            'own_prefixes = ["990012"]\nvid = "0x0c2e"\n'
        )
    )
    settings = load_settings(write(tmp_path, text))
    check_readers(settings)
    assert settings.readers[1].options["baudrate"] == 115200


@pytest.mark.parametrize(("currency", "decimals"), [("JPY", 0), ("KRW", 0), ("BHD", 3), ("CLF", 4)])
def test_currency_without_two_decimals_is_refused(
    tmp_path: Path, currency: str, decimals: int
) -> None:
    """Prices are typed and shown with 2 decimals: a yen shop would be charged 100 times
    what the cashier meant. Refused at load, saying why."""
    err = load_error(tmp_path, edited('currency = "EUR"', f'currency = "{currency}"'))
    assert err.key == "shop.currency"
    assert err.problem.startswith(f"{currency} has {decimals} decimals")
    assert "only currencies with 2 decimals" in err.problem


@pytest.mark.parametrize("currency", ["USD", "GBP", "CHF", "SEK"])
def test_two_decimal_currencies_load(tmp_path: Path, currency: str) -> None:
    s = load_settings(write(tmp_path, edited('currency = "EUR"', f'currency = "{currency}"')))
    assert s.currency == currency


def test_error_message_is_one_line_with_file_key_problem(tmp_path: Path) -> None:
    path = write(tmp_path, edited("required = 9", 'required = "nine"'))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert re.fullmatch(
        re.escape(f"{path}: programs[0].required: must be a positive integer, got 'nine'"),
        str(info.value),
    )


def test_reader_settings_are_checked_by_the_commands_that_open_readers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``init`` (and ``terminal``, ``devices``) refuse a bad reader setting before they
    start; the sync service and the server, which never open readers, do not load the
    reader stack to read their settings (DESIGN: the server never imports drivers)."""
    from pos_loyalty.cli import main

    path = write(
        tmp_path, embedded_default_text() + SERIAL + '[readers.options]\nframing = "crr"\n'
    )
    assert main(["--config", str(path), "--data-dir", str(tmp_path / "d"), "init"]) == 2
    err = capsys.readouterr().err
    assert "readers[1].options.framing" in err and "reader 'counter'" in err
    assert not (tmp_path / "d").exists()  # refused before anything was made
    probe = (
        "import sys; from pathlib import Path; from pos_loyalty.config import load_settings; "
        f"load_settings(Path({str(path)!r})); "
        "print(sorted(m for m in sys.modules if m == 'drivers' or m.startswith('drivers.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


MEMBER_GOLD = """
[[programs]]
id = "gold-muffin"
kind = "member_offer"
label = "Gold price"
skus = ["muffin"]
price = 250
tiers = ["{tier}"]
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            embedded_default_text() + MEMBER_GOLD.format(tier="Gold"),
            "gold-muffin: tiers ['Gold'] are not tier levels (levels: bronze, gold, silver)",
        ),
        (
            edited('downgrade = "never"', 'downgrade = "window"'),
            'downgrade = "window" needs a rolling window',
        ),
        (
            embedded_default_text()
            + MEMBER_GOLD.format(tier="gold")
            + "valid_from = 2025-02-01T00:00:00+00:00\n"
            + "valid_until = 2025-01-01T00:00:00+00:00\n",
            "gold-muffin: valid_from is after valid_until",
        ),
    ],
    ids=["tier-name-typo", "window-downgrade-on-lifetime", "window-backwards"],
)
def test_a_program_that_could_never_apply_is_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Each used to load and silently switch its program off (a gold customer paid the list
    price; a tier was never re-evaluated; a promotion never ran)."""
    err = load_error(tmp_path, text)
    assert err.key == "programs"
    assert problem in err.problem
