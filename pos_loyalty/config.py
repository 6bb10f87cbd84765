"""Till configuration: read a TOML file, check every key, build immutable settings.

``load_settings()`` reads ``config.example.toml`` shipped inside the package (the demo shop);
``load_settings(path)`` reads a shop's own file. Any problem raises :class:`ConfigError`, whose
message is one line naming the file, the dotted key and what is wrong, e.g.::

    /etc/pos-loyalty.toml: programs[1].required: must be a positive integer, got 'nine'

Validation: pydantic owns the structure (nesting, unknown keys via ``extra="forbid"``, missing
keys, error locations); each leaf type is an ``Annotated`` type whose small validator checks
the exact TOML type and range and words the error for a shop owner. Pydantic's own messages
("Input should be a valid integer, unable to parse string...") and its lax coercions
("9" -> 9, true -> 1) are both wrong for a config file, hence those validators.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import platformdirs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from pos_loyalty.domain.programs import (
    BuyXGetYProgram,
    CashbackProgram,
    ComboProgram,
    CouponProgram,
    Downgrade,
    GiftProgram,
    GreenProgram,
    MemberOfferProgram,
    NextVisitProgram,
    Nudges,
    PointsProgram,
    Program,
    ProgramSet,
    PromoCodeProgram,
    ReferralProgram,
    ReferralTrigger,
    Scope,
    StampBasis,
    StampCardProgram,
    StampReward,
    Target,
    TierLevel,
    TierProgram,
    WelcomeProgram,
)

__all__ = [
    "ConfigError",
    "OfflineLimits",
    "ReaderConfig",
    "Settings",
    "SyncConfig",
    "embedded_default_text",
    "load_programs_text",
    "load_settings",
    "EMBEDDED_SOURCE",
    "READER_KINDS",
]

EMBEDDED_SOURCE = "<embedded default>"
READER_KINDS = ("keyboard", "serial", "hidraw", "usb", "evdev", "webcam")
_APP_NAME = "pos-loyalty"


class ConfigError(Exception):
    """A configuration problem. ``str(e)`` is one line: ``<file>: <key>: <what is wrong>``.

    ``key`` is a dotted path such as ``api.port`` or ``programs[1].required``; it is ``""``
    when the problem concerns the file as a whole (unreadable), and ``line N`` for malformed
    TOML.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        parts = [file, key, problem] if key else [file, problem]
        super().__init__(": ".join(parts))


# --------------------------------------------------------------------------- settings records


@dataclass(frozen=True)
class OfflineLimits:
    """Most points that may be redeemed, and most wallet money (minor units) that may be
    paid from cashback wallets or paid out, per day at this till while offline (0 = none)."""

    points_per_card_per_day: int
    points_per_terminal_per_day: int
    wallet_per_card_per_day: int = 5000
    wallet_per_terminal_per_day: int = 50000


@dataclass(frozen=True)
class ReaderConfig:
    """One card reader: ``kind`` is one of :data:`READER_KINDS`; ``url`` where it is."""

    name: str
    kind: str
    url: str | None
    options: Mapping[str, object]


@dataclass(frozen=True)
class SyncConfig:
    server_url: str | None
    enabled: bool
    interval_seconds: int
    # Hold only the customers whose home store is in this till's store's region (sync).
    region_only: bool = False


@dataclass(frozen=True)
class Settings:
    terminal_id: str
    store_id: str
    shop_name: str
    currency: str
    card_prefix: str
    data_dir: Path
    api_host: str
    api_port: int
    max_body_bytes: int
    max_clock_skew_seconds: int
    offline: OfflineLimits
    readers: tuple[ReaderConfig, ...]
    sync: SyncConfig
    programs: ProgramSet
    source: str  # path of the file read, or EMBEDDED_SOURCE
    coupon_key_file: Path = Path("coupon-signing.key")  # this till's Ed25519 key (raw seed)
    coupon_trusted_keys: tuple[str, ...] = ()  # other tills' / HQ's public keys (hex)
    # Raw Ed25519 public keys (32 bytes each) whose signed digital cards this till accepts
    # (``[shop] card_public_keys``, ``drivers.cards.verify_card``).
    card_public_keys: tuple[bytes, ...] = ()


# --------------------------------------------------------------------------- leaf validators


def _show(value: object) -> str:
    """A TOML-ish rendering of a bad value for an error message, kept short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked(check: Callable[[Any], bool], what: str) -> PlainValidator:
    """A pydantic validator accepting values that pass ``check`` exactly as TOML gave them."""

    def validate(value: Any) -> Any:
        if not check(value):
            raise ValueError(f"must be {what}, got {_show(value)}")
        return value

    return PlainValidator(validate)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(low: int, high: int | None, what: str) -> PlainValidator:
    return _checked(lambda v: _is_int(v) and v >= low and (high is None or v <= high), what)


def _matching(pattern: str, what: str) -> PlainValidator:
    compiled = re.compile(pattern)
    return _checked(lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None, what)


def _one_of(choices: Sequence[str]) -> PlainValidator:
    what = "one of " + ", ".join(repr(c) for c in choices)
    return _checked(lambda v: isinstance(v, str) and v in choices, what)


def _is_text_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_optional_url(value: object) -> bool:
    return isinstance(value, str) and (value == "" or _URL_RE.fullmatch(value) is not None)


_URL_RE = re.compile(r"https?://[^\s/]+(/\S*)?")

PosInt = Annotated[int, _int_at_least(1, None, "a positive integer")]
NonNegInt = Annotated[int, _int_at_least(0, None, "zero or a positive integer")]
PortInt = Annotated[int, _int_at_least(1, 65535, "a port number from 1 to 65535")]
Text = Annotated[str, _checked(lambda v: isinstance(v, str), "text in quotes")]
NonEmptyText = Annotated[
    str, _checked(lambda v: isinstance(v, str) and v.strip() != "", "non-empty text")
]
Flag = Annotated[bool, _checked(lambda v: isinstance(v, bool), "true or false")]
TextList = Annotated[list[str], _checked(_is_text_list, 'a list of texts such as ["a", "b"]')]
Ident = Annotated[
    str,
    _matching(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "an id of letters, digits, '.', '_' or '-'"),
]
Currency = Annotated[
    str, _matching(r"[A-Z]{3}", "3 capital letters (an ISO 4217 code such as 'EUR')")
]
CardPrefix = Annotated[str, _matching(r"[A-Z]{1,4}", "1 to 4 capital letters")]

# ISO 4217 currencies whose minor unit is not 2 decimals (the list of 2024). Amounts are
# entered and shown with 2 decimals at the till (3.20 is 320 minor units), so a shop in one of
# these is refused rather than charged 100 times too much or too little.
MINOR_UNITS_NOT_2: Mapping[str, int] = MappingProxyType(
    dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    )
    | dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3)
    | dict.fromkeys(["CLF", "UYW"], 4)
)


def _shop_currency(value: Any) -> Any:
    if not (isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value)):
        raise ValueError(
            f"must be 3 capital letters (an ISO 4217 code such as 'EUR'), got {_show(value)}"
        )
    decimals = MINOR_UNITS_NOT_2.get(value)
    if decimals is not None:
        raise ValueError(
            f"{value} has {decimals} decimals (ISO 4217 minor unit); pos-loyalty handles only "
            "currencies with 2 decimals (cents), such as EUR, USD, GBP or CHF"
        )
    return value


ShopCurrency = Annotated[str, PlainValidator(_shop_currency)]
OptionalUrl = Annotated[str, _checked(_is_optional_url, '"" or an http:// or https:// address')]
ReaderKind = Annotated[str, _one_of(READER_KINDS)]
BasisPoints = Annotated[int, _int_at_least(0, 10000, "basis points from 0 to 10000 (1500 = 15%)")]
Moment = Annotated[
    datetime,
    _checked(
        lambda v: isinstance(v, datetime) and v.tzinfo is not None,
        "a date and time with offset, unquoted, e.g. 2026-11-27T00:00:00+01:00",
    ),
]
HexKey = Annotated[
    str, _matching(r"[0-9a-fA-F]{64}", "an Ed25519 public key as 64 hexadecimal digits")
]
StampBasisName = Annotated[str, _one_of([b.value for b in StampBasis])]
StampRewardName = Annotated[str, _one_of([r.value for r in StampReward])]


# --------------------------------------------------------------------------- file schema


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Terminal(_Section):
    id: Ident
    store_id: Ident = "store-1"


class _Shop(_Section):
    name: Text = ""
    currency: ShopCurrency
    card_prefix: CardPrefix = "PL"
    card_public_keys: Annotated[list[Text], Field(default_factory=list)]


class _Storage(_Section):
    data_dir: Text = ""


class _Api(_Section):
    host: NonEmptyText = "127.0.0.1"
    port: PortInt = 8765
    max_body_bytes: PosInt = 65536
    max_clock_skew_seconds: NonNegInt = 300


class _Offline(_Section):
    points_per_card_per_day: NonNegInt = 5000
    points_per_terminal_per_day: NonNegInt = 50000
    wallet_per_card_per_day: NonNegInt = 5000
    wallet_per_terminal_per_day: NonNegInt = 50000


class _Sync(_Section):
    enabled: Flag = False
    server_url: OptionalUrl = ""
    interval_seconds: PosInt = 30
    region_only: Flag = False


class _Guards(_Section):
    max_discount_bp: BasisPoints = 10000


class _NudgesSection(_Section):
    enabled: Flag = True
    stamps_within: NonNegInt = 1
    spend_within: NonNegInt = 500


class _Coupons(_Section):
    key_file: Text = "coupon-signing.key"
    trusted_keys: Annotated[list[HexKey], Field(default_factory=list)]


class _Reader(_Section):
    name: Ident
    kind: ReaderKind
    url: Text = ""
    options: dict[str, Any] = Field(default_factory=dict)


class _File(_Section):
    terminal: _Terminal
    shop: _Shop
    storage: _Storage = _Storage()
    api: _Api = _Api()
    offline: _Offline = _Offline()
    sync: _Sync = _Sync()
    guards: _Guards = _Guards()
    nudges: _NudgesSection = _NudgesSection()
    coupons: _Coupons = Field(default_factory=lambda: _Coupons(trusted_keys=[]))
    # No [[readers]] at all: the keyboard (a keyboard-wedge scanner, or typing) is the reader.
    readers: list[_Reader] = Field(
        default_factory=lambda: [_Reader(name="keyboard", kind="keyboard")]
    )
    # Programs are validated one by one below, by kind, so their error locations read
    # ``programs[1].required`` rather than carrying pydantic's union tag.
    programs: list[Any] = Field(default_factory=list)


class _ProgramBase(_Section):
    id: Ident
    kind: Text
    label: NonEmptyText


class _Stamps(_ProgramBase):
    categories: TextList = Field(default_factory=list)
    skus: TextList = Field(default_factory=list)
    per: StampBasisName = "item"
    required: PosInt = 9
    reward: StampRewardName = "free_item"
    reward_amount: NonNegInt = 0
    reward_label: NonEmptyText = "Free item"

    def build(self) -> StampCardProgram:
        return StampCardProgram(
            id=self.id,
            label=self.label,
            categories=frozenset(self.categories),
            skus=frozenset(self.skus),
            per=StampBasis(self.per),
            required=self.required,
            reward=StampReward(self.reward),
            reward_amount=self.reward_amount,
            reward_label=self.reward_label,
        )


class _Points(_ProgramBase):
    points_per_unit: NonNegInt = 1
    unit: PosInt = 100
    point_value: PosInt = 1
    expiry_days: NonNegInt = 365
    excluded_categories: TextList = Field(default_factory=list)
    redeemable: Flag = True

    def build(self) -> PointsProgram:
        return PointsProgram(
            id=self.id,
            label=self.label,
            points_per_unit=self.points_per_unit,
            unit=self.unit,
            point_value=self.point_value,
            expiry_days=self.expiry_days,
            excluded_categories=frozenset(self.excluded_categories),
            redeemable=self.redeemable,
        )


class _Welcome(_ProgramBase):
    points: NonNegInt
    points_program: Ident

    def build(self) -> WelcomeProgram:
        return WelcomeProgram(
            id=self.id, label=self.label, points=self.points, points_program=self.points_program
        )


class _Promo(_ProgramBase):
    """Fields every promotion has: on/off, stacking and validity guards."""

    enabled: Flag = True
    priority: NonNegInt = 100
    exclusive: Flag = False
    valid_from: Moment | None = None
    valid_until: Moment | None = None
    stores: TextList = Field(default_factory=list)

    def scope(self) -> Scope:
        return Scope(
            self.priority,
            self.exclusive,
            self.valid_from,
            self.valid_until,
            frozenset(self.stores),
        )


class _Targeted(_Promo):
    categories: TextList = Field(default_factory=list)
    skus: TextList = Field(default_factory=list)

    def target(self) -> Target:
        return Target(frozenset(self.categories), frozenset(self.skus))


class _Level(_Section):
    name: Ident
    threshold: NonNegInt
    points_multiplier_percent: PosInt = 100
    percent_off_bp: BasisPoints = 0


class _Tiers(_Promo):
    window: Annotated[str, _one_of(["lifetime", "rolling"])] = "lifetime"
    window_days: NonNegInt = 0
    downgrade: Annotated[str, _one_of([d.value for d in Downgrade])] = "never"
    excluded_categories: TextList = Field(default_factory=list)
    levels: list[_Level]

    def build(self) -> TierProgram:
        if self.window == "rolling" and self.window_days < 1:
            raise ValueError("window_days must be at least 1 for a rolling window")
        return TierProgram(
            self.id,
            self.label,
            tuple(
                TierLevel(lv.name, lv.threshold, lv.points_multiplier_percent, lv.percent_off_bp)
                for lv in self.levels
            ),
            self.window_days if self.window == "rolling" else 0,
            Downgrade(self.downgrade),
            frozenset(self.excluded_categories),
            self.scope(),
        )


class _PromoCode(_Targeted):
    code: Annotated[str, _matching(r"[A-Za-z0-9_-]{2,32}", "2 to 32 letters or digits")]
    percent_bp: BasisPoints = 0
    amount: NonNegInt = 0
    min_amount: NonNegInt = 0
    min_qty: NonNegInt = 0
    max_uses: NonNegInt = 0
    max_uses_per_customer: NonNegInt = 0

    def build(self) -> PromoCodeProgram:
        return PromoCodeProgram(
            self.id,
            self.label,
            self.code,
            self.percent_bp,
            self.amount,
            self.target(),
            self.min_amount,
            self.min_qty,
            self.max_uses,
            self.max_uses_per_customer,
            self.scope(),
        )


class _Coupon(_Targeted):
    percent_bp: BasisPoints = 0
    amount: NonNegInt = 0
    min_amount: NonNegInt = 0
    valid_days: PosInt = 30
    reward_min_spend: NonNegInt = 0

    def build(self) -> CouponProgram:
        return CouponProgram(
            self.id,
            self.label,
            self.percent_bp,
            self.amount,
            self.target(),
            self.min_amount,
            self.valid_days,
            self.reward_min_spend,
            self.scope(),
        )


class _NextVisit(_Promo):
    percent_bp: BasisPoints
    valid_days: PosInt = 7
    min_amount: NonNegInt = 0

    def build(self) -> NextVisitProgram:
        return NextVisitProgram(
            self.id, self.label, self.percent_bp, self.valid_days, self.min_amount, self.scope()
        )


class _Component(_Section):
    categories: TextList = Field(default_factory=list)
    skus: TextList = Field(default_factory=list)


class _Combo(_Promo):
    components: list[_Component]
    price: NonNegInt

    def build(self) -> ComboProgram:
        return ComboProgram(
            self.id,
            self.label,
            tuple(Target(frozenset(c.categories), frozenset(c.skus)) for c in self.components),
            self.price,
            self.scope(),
        )


class _BuyGet(_Targeted):
    buy: PosInt
    get: PosInt = 1
    percent_bp: BasisPoints = 10000

    def build(self) -> BuyXGetYProgram:
        return BuyXGetYProgram(
            self.id, self.label, self.target(), self.buy, self.get, self.percent_bp, self.scope()
        )


class _Cashback(_ProgramBase):
    enabled: Flag = True
    percent_bp: BasisPoints
    payout: Flag = False
    excluded_categories: TextList = Field(default_factory=list)

    def build(self) -> CashbackProgram:
        return CashbackProgram(
            self.id,
            self.label,
            self.percent_bp,
            self.payout,
            frozenset(self.excluded_categories),
        )


class _Member(_Targeted):
    price: NonNegInt | None = None
    percent_bp: BasisPoints = 0
    tiers: TextList = Field(default_factory=list)
    tags: TextList = Field(default_factory=list)

    def build(self) -> MemberOfferProgram:
        return MemberOfferProgram(
            self.id,
            self.label,
            self.target(),
            self.price,
            self.percent_bp,
            frozenset(self.tiers),
            frozenset(self.tags),
            self.scope(),
        )


class _Gift(_Targeted):
    min_amount: NonNegInt = 0
    min_qty: NonNegInt = 0
    gift_sku: Text = ""
    vouchers: TextList = Field(default_factory=list)

    def build(self) -> GiftProgram:
        return GiftProgram(
            self.id,
            self.label,
            self.min_amount,
            self.min_qty,
            self.target(),
            self.gift_sku,
            tuple(self.vouchers),
            self.scope(),
        )


class _Green(_Targeted):
    flag: Ident
    amount: PosInt

    def build(self) -> GreenProgram:
        return GreenProgram(
            self.id, self.label, self.flag, self.target(), self.amount, self.scope()
        )


class _Referral(_ProgramBase):
    enabled: Flag = True
    points_program: Ident
    new_customer_points: NonNegInt = 0
    referrer_points: NonNegInt = 0
    referrer_step: NonNegInt = 0
    referrer_max: NonNegInt = 0
    trigger: Annotated[str, _one_of([t.value for t in ReferralTrigger])] = "enrol"
    min_amount: NonNegInt = 0

    def build(self) -> ReferralProgram:
        return ReferralProgram(
            self.id,
            self.label,
            self.points_program,
            self.new_customer_points,
            self.referrer_points,
            self.referrer_step,
            self.referrer_max,
            ReferralTrigger(self.trigger),
            self.min_amount,
        )


_PROGRAM_KINDS: dict[str, type[Any]] = {
    "stamps": _Stamps,
    "points": _Points,
    "welcome": _Welcome,
    "tiers": _Tiers,
    "promo_code": _PromoCode,
    "coupon": _Coupon,
    "next_visit": _NextVisit,
    "bundle": _Combo,
    "buy_x_get_y": _BuyGet,
    "cashback": _Cashback,
    "member_offer": _Member,
    "gift": _Gift,
    "green": _Green,
    "referral": _Referral,
}


# --------------------------------------------------------------------------- error wording


def _dotted(loc: Sequence[int | str], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_TABLE_TYPES = {"model_type", "model_attributes_type", "dict_type"}


def _first_error(file: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        problem = f"unknown key {str(loc[-1])!r}"
    elif kind == "missing":
        problem = "is required but missing"
    elif kind in _TABLE_TYPES:
        problem = f"must be a table, got {_show(value)}"
    elif kind == "list_type":
        problem = f"must be a list, got {_show(value)}"
    elif kind == "value_error":
        problem = str(err.get("ctx", {}).get("error", err["msg"]))
    else:  # not expected with the types above; keep pydantic's wording rather than hide it
        problem = f"{err['msg']}, got {_show(value)}"
    return ConfigError(file, _dotted(loc, prefix), problem)


# --------------------------------------------------------------------------- loading


def embedded_default_text() -> str:
    """The text of the configuration shipped in the package (the demo shop)."""
    return resources.files("pos_loyalty").joinpath("config.example.toml").read_text("utf-8")


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _parse(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _TOML_POS_RE.search(msg)
        if pos:
            head = msg[: pos.start()]
            raise ConfigError(
                file, f"line {pos.group(1)}", f"invalid TOML: {head} (column {pos.group(2)})"
            ) from None
        raise ConfigError(file, "", f"invalid TOML: {msg}") from None


def _build_programs(
    file: str, raw: list[Any], currency: str, file_model: _File | None = None
) -> ProgramSet:
    built: list[Program] = []
    for index, entry in enumerate(raw):
        key = f"programs[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, key, f"must be a [[programs]] table, got {_show(entry)}")
        kind = entry.get("kind")
        model = _PROGRAM_KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            what = "is required but missing" if kind is None else f"got {_show(kind)}"
            choices = ", ".join(repr(k) for k in _PROGRAM_KINDS)
            raise ConfigError(file, f"{key}.kind", f"must be one of {choices}; {what}")
        try:
            parsed = model.model_validate(entry)
            if not getattr(parsed, "enabled", True):
                continue  # documented and checked, but switched off
            built.append(parsed.build())
        except ValidationError as exc:
            raise _first_error(file, exc, prefix=key) from None
        except ValueError as exc:
            raise ConfigError(file, key, str(exc)) from None
    extra: dict[str, Any] = {}
    if file_model is not None:
        extra["max_discount_bp"] = file_model.guards.max_discount_bp
        n = file_model.nudges
        extra["nudges"] = Nudges(n.enabled, n.stamps_within, n.spend_within)
    programs = ProgramSet(currency=currency, programs=tuple(built), **extra)
    problems = programs.problems()
    if problems:
        raise ConfigError(file, "programs", problems[0])
    return programs


def _card_public_key(file: str, index: int, path: Path) -> bytes:
    """The raw bytes of the Ed25519 public key in a PEM file (``cards keygen`` writes it)."""
    key = f"shop.card_public_keys[{index}]"
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(file, key, f"{path} is not a PEM public key") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(file, key, f"{path} is not an Ed25519 public key")
    return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _resolve_data_dir(configured: str, base: Path) -> Path:
    if configured == "":
        return Path(platformdirs.user_data_dir(_APP_NAME, appauthor=False))
    path = Path(configured).expanduser()
    if not path.is_absolute():
        path = base / path
    return path.absolute()


def load_settings(path: Path | None = None, *, data_dir: Path | None = None) -> Settings:
    """Read and check a configuration file; ``path=None`` reads the embedded default.

    ``data_dir`` (e.g. from ``--data-dir``) overrides ``storage.data_dir``. In the file, ``""``
    means the platform's user data folder, and a relative path is relative to the file's
    folder (for the embedded default: to the current directory).

    Raises ConfigError for anything wrong, with a one-line message.
    """
    if path is None:
        file = EMBEDDED_SOURCE
        text = embedded_default_text()
        base = Path.cwd()
    else:
        path = Path(path)
        file = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(file, "", f"cannot read the file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(file, "", "is not UTF-8 text") from None
        base = path.absolute().parent

    raw = _parse(text, file)
    try:
        model = _File.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(file, exc) from None

    names: set[str] = set()
    readers: list[ReaderConfig] = []
    for index, reader in enumerate(model.readers):
        if reader.name in names:
            raise ConfigError(
                file, f"readers[{index}].name", f"reader name {reader.name!r} is used twice"
            )
        names.add(reader.name)
        if reader.kind == "serial" and not reader.url:
            raise ConfigError(file, f"readers[{index}].url", "is required for a serial reader")
        config = ReaderConfig(
            name=reader.name,
            kind=reader.kind,
            url=reader.url or None,
            options=MappingProxyType(dict(reader.options)),
        )
        readers.append(config)
    if model.sync.enabled and not model.sync.server_url:
        raise ConfigError(file, "sync.server_url", "is required when sync.enabled is true")

    programs = _build_programs(file, model.programs, model.shop.currency, model)

    if data_dir is not None:
        resolved = Path(data_dir).expanduser().absolute()
    else:
        resolved = _resolve_data_dir(model.storage.data_dir, base)
    key_file = Path(model.coupons.key_file).expanduser()
    if not key_file.is_absolute():
        key_file = resolved / key_file
    card_keys = tuple(
        _card_public_key(file, index, base / Path(name).expanduser())
        for index, name in enumerate(model.shop.card_public_keys)
    )

    return Settings(
        terminal_id=model.terminal.id,
        store_id=model.terminal.store_id,
        shop_name=model.shop.name,
        currency=model.shop.currency,
        card_prefix=model.shop.card_prefix,
        data_dir=resolved,
        api_host=model.api.host,
        api_port=model.api.port,
        max_body_bytes=model.api.max_body_bytes,
        max_clock_skew_seconds=model.api.max_clock_skew_seconds,
        offline=OfflineLimits(
            points_per_card_per_day=model.offline.points_per_card_per_day,
            points_per_terminal_per_day=model.offline.points_per_terminal_per_day,
            wallet_per_card_per_day=model.offline.wallet_per_card_per_day,
            wallet_per_terminal_per_day=model.offline.wallet_per_terminal_per_day,
        ),
        readers=tuple(readers),
        sync=SyncConfig(
            server_url=model.sync.server_url or None,
            enabled=model.sync.enabled,
            interval_seconds=model.sync.interval_seconds,
            region_only=model.sync.region_only,
        ),
        programs=programs,
        source=file,
        coupon_key_file=key_file,
        coupon_trusted_keys=tuple(model.coupons.trusted_keys),
        card_public_keys=card_keys,
    )


# --------------------------------------------------------------------------- program files


class _ProgramFile(_Section):
    """A program configuration on its own, as the central server distributes it."""

    currency: Currency | None = None
    guards: _Guards | None = None
    nudges: _NudgesSection | None = None
    programs: list[Any] = Field(default_factory=list)


PROGRAM_FILE_KEYS = ("programs", "guards", "nudges", "currency")


def load_programs_text(
    text: str, file: str, *, currency: str | None = None, defaults: ProgramSet | None = None
) -> ProgramSet:
    """Check a stand-alone program configuration and build its program set.

    The text holds ``[[programs]]`` tables (at least one) and optionally ``[guards]``,
    ``[nudges]`` and a top-level ``currency``; nothing else (a till's own settings — terminal,
    readers, ports — never come from there). Each program is checked exactly as the
    ``[[programs]]`` of a till's configuration file (same code, same messages).

    ``currency``: the till's ``shop.currency``; a file naming another currency is refused.
    ``None`` (the operator's check on the server) accepts any. ``defaults``: the till's own
    program set, whose ``max_discount_bp`` and nudges apply when the file has no ``[guards]``
    or ``[nudges]``. Raises ConfigError (one line: file, key, problem).
    """
    raw = _parse(text, file)
    for key in raw:
        if key not in PROGRAM_FILE_KEYS:
            raise ConfigError(
                file,
                key,
                "unknown key: a program configuration holds only [[programs]], [guards], "
                "[nudges] and currency",
            )
    try:
        model = _ProgramFile.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(file, exc) from None
    if not model.programs:
        raise ConfigError(file, "programs", "needs at least one [[programs]] table")
    if currency is not None and model.currency is not None and model.currency != currency:
        raise ConfigError(
            file, "currency", f"is {model.currency!r} but this till's shop.currency is {currency!r}"
        )
    built = _build_programs(file, model.programs, currency or model.currency or "XXX")
    max_discount_bp = defaults.max_discount_bp if defaults is not None else built.max_discount_bp
    nudges = defaults.nudges if defaults is not None else built.nudges
    if model.guards is not None:
        max_discount_bp = model.guards.max_discount_bp
    if model.nudges is not None:
        n = model.nudges
        nudges = Nudges(n.enabled, n.stamps_within, n.spend_within)
    return replace(built, max_discount_bp=max_discount_bp, nudges=nudges)
