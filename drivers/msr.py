"""ISO/IEC 7813 magnetic-stripe swipes: tracks 1, 2 and 3 as a reader sends them.

A keyboard or serial mag-stripe reader sends one line per swipe::

    %B4111111111111111^DOE/JOHN^2512101000000000?;4111111111111111=25121010000000000?

* track 1 (IATA, alphanumeric): ``%`` ... ``?``; format code ``B`` means a financial card;
* track 2 (ABA, numeric): ``;`` ... ``?``, fields separated by ``=``;
* track 3 (THRIFT, numeric): ``;`` (or ``+`` on some readers) ... ``?``;
* a track that could not be read is sent as ``%E?``, ``;E?`` or ``+E?``;
* some readers send the longitudinal redundancy check (LRC) character after the end
  sentinel; it is verified when present.

A failed track does not spoil the others: :func:`parse_swipe` returns every track with its
own status, and :func:`loyalty_id` picks the card id from the good ones, using the shop's own
layouts first. Payment-card data is refused by the caller (:mod:`drivers.parse`) with the
guard from :mod:`drivers.payment_guard` *before* this module's results are used.

Pure and stdlib-only; never raises on any input text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "MsrLayout",
    "Swipe",
    "Track",
    "layouts_from_options",
    "looks_like_swipe",
    "loyalty_id",
    "lrc_char",
    "parse_swipe",
]

_START = {"%": 1, ";": 2, "+": 3}
_END = "?"
# Track 2/3 characters: 4-bit BCD 0x30-0x3F; '?' ends the track and ';' starts one.
_NUMERIC = frozenset("0123456789:<=>")


@dataclass(frozen=True)
class Track:
    """One track of a swipe. ``content`` excludes sentinels and LRC; None if it failed.

    ``error`` is None or one of "unreadable" (the reader's E marker), "lrc_mismatch",
    "malformed" (no end sentinel, or characters the track cannot hold).
    ``lrc`` is True when an LRC was present and matched, None when absent.
    """

    number: int
    content: str | None
    error: str | None = None
    lrc: bool | None = None

    @property
    def ok(self) -> bool:
        return self.content is not None


@dataclass(frozen=True)
class Swipe:
    tracks: tuple[Track, ...]

    @property
    def good(self) -> tuple[Track, ...]:
        return tuple(t for t in self.tracks if t.ok)

    def track(self, number: int) -> Track | None:
        for t in self.tracks:
            if t.number == number:
                return t
        return None


@dataclass(frozen=True)
class MsrLayout:
    """A shop's own card layout: on ``track``, ``pattern`` (searched) finds the card id.

    The id is the named group ``id`` if the pattern has one, else group 1, else the match.
    """

    track: int
    pattern: re.Pattern[str]

    @classmethod
    def from_mapping(cls, entry: Mapping[str, object]) -> MsrLayout:
        track = entry.get("track")
        pattern = entry.get("pattern")
        if track not in (1, 2, 3) or not isinstance(pattern, str):
            raise ValueError("an MSR layout needs track = 1, 2 or 3 and a pattern string")
        assert isinstance(track, int)
        return cls(track, re.compile(pattern))

    def extract(self, content: str) -> str | None:
        match = self.pattern.search(content)
        if match is None:
            return None
        if "id" in self.pattern.groupindex:
            value = match.group("id")
        elif self.pattern.groups >= 1:
            value = match.group(1)
        else:
            value = match.group(0)
        return value or None


def layouts_from_options(value: object) -> tuple[MsrLayout, ...]:
    """``[{"track": 2, "pattern": "..."}, ...]`` from a reader's options -> layouts."""
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError("msr_layouts must be a list of {track, pattern} tables")
    layouts: list[MsrLayout] = []
    for entry in value:
        if isinstance(entry, MsrLayout):
            layouts.append(entry)
        elif isinstance(entry, Mapping):
            layouts.append(MsrLayout.from_mapping(entry))
        else:
            raise ValueError("msr_layouts must be a list of {track, pattern} tables")
    return tuple(layouts)


def lrc_char(number: int, content: str) -> str:
    """The LRC character of a track (sentinels included in the check, parity bits not)."""
    if number == 1:
        start, base = "%", 0x20
        mask = 0x3F
    else:
        start, base = ";", 0x30
        mask = 0x0F
    value = 0
    for char in start + content + _END:
        value ^= (ord(char) - base) & mask
    return chr(value + base)


def looks_like_swipe(text: str) -> bool:
    """True if ``text`` starts like a mag-stripe track (``%``, ``;`` or ``+`` ... ``?``)."""
    stripped = text.lstrip()
    return bool(stripped) and stripped[0] in _START and _END in stripped


def _valid_content(number: int, content: str) -> bool:
    if number == 1:
        return all(" " <= c <= "~" and c not in "%?" for c in content)
    return all(c in _NUMERIC for c in content)


def parse_swipe(text: str, *, lrc: str = "auto") -> Swipe:
    """Split a swipe into its tracks.

    ``lrc``: "auto" (verify an LRC character when one follows an end sentinel), "absent"
    (never expect one) or "required" (a track without a matching LRC is "lrc_mismatch").
    Characters outside tracks (CR, LF, spaces, noise) are skipped.
    """
    tracks: list[Track] = []
    seen: set[int] = set()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char not in _START:
            i += 1
            continue
        number = _START[char]
        if char == ";" and 2 in seen:
            number = 3
        end = text.find(_END, i + 1)
        if end < 0:
            if number not in seen:
                tracks.append(Track(number, None, "malformed"))
                seen.add(number)
            break
        content = text[i + 1 : end]
        i = end + 1
        # LRC: the character right after the end sentinel, if it matches (auto) or always
        # when required.
        lrc_ok: bool | None = None
        if i < n and lrc != "absent":
            nxt = text[i]
            expected = lrc_char(number, content) if _valid_content(number, content) else None
            if nxt == expected and not (nxt in _START and _looks_like_track(text, i)):
                lrc_ok = True
                i += 1
            elif lrc == "required" or (
                nxt not in _START and not nxt.isspace() and content.upper() != "E"
            ):
                lrc_ok = False
                if nxt not in _START:
                    i += 1
        elif lrc == "required":
            lrc_ok = False
        if number in seen:
            continue  # a repeated track: keep the first
        seen.add(number)
        if content.upper() == "E":
            tracks.append(Track(number, None, "unreadable"))
        elif not content or not _valid_content(number, content):
            tracks.append(Track(number, None, "malformed"))
        elif lrc_ok is False:
            tracks.append(Track(number, None, "lrc_mismatch", lrc=False))
        else:
            tracks.append(Track(number, content, None, lrc=lrc_ok))
    return Swipe(tuple(tracks))


def _looks_like_track(text: str, at: int) -> bool:
    """True if a start sentinel at ``at`` begins a plausible track (an end sentinel follows)."""
    return text.find(_END, at + 1) > at + 1


def _default_id(track: Track) -> str | None:
    content = track.content
    if content is None:
        return None
    if track.number == 1:
        first = content.split("^", 1)[0]
        if first[:1].isalpha() and len(first) > 1:
            first = first[1:]  # format code
        first = first.replace(" ", "")
        return first or None
    account = content.split("=", 1)[0]
    return account or None


def loyalty_id(
    swipe: Swipe,
    *,
    layouts: Sequence[MsrLayout] = (),
    preference: Sequence[int] = (2, 1, 3),
) -> tuple[int, str] | None:
    """The card id of a (non-payment) swipe and the track it came from, or None.

    The shop's own ``layouts`` are tried first, in order; then the account field of the good
    tracks in ``preference`` order (track 2 and 3: before ``=``; track 1: the first field
    without its format code).
    """
    for layout in layouts:
        track = swipe.track(layout.track)
        if track is not None and track.content is not None:
            found = layout.extract(track.content)
            if found:
                return layout.track, found
    if layouts:
        return None  # the shop said what its cards look like; this is not one of them
    for number in preference:
        track = swipe.track(number)
        if track is not None:
            found = _default_id(track)
            if found:
                return number, found
    return None
