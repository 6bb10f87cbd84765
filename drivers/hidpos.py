"""HID POS barcode-scanner input reports (HID usage page 0x8C), reassembled into scans.

The HID POS Usage Tables' "Barcode Scanner Input Report", as Honeywell, Zebra, Datalogic
and others send it in HID POS mode::

    [report id] [length N] [AIM id: 3 bytes] [data: fixed size, first N valid] ... [flags]

* the length byte counts the valid data bytes of this report;
* the three symbology-identifier bytes hold the AIM identifier (``]E0``; some devices send
  it without the ``]``, or zeros when unknown);
* bit 0 of the last byte is "decoded data continued": the code goes on in the next report
  (a long QR code spans several reports).

:class:`HidPosReassembler` turns reports into :class:`HidPosScan` values or
:class:`HidPosError` values; it never raises on malformed reports.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HidPosError", "HidPosReassembler", "HidPosScan", "parse_aim_field"]


@dataclass(frozen=True)
class HidPosScan:
    aim: str | None
    data: bytes


@dataclass(frozen=True)
class HidPosError:
    """A report that could not be used: ``code`` is "bad_report_id", "short_report",
    "bad_length" or "too_long". Holds no scanned data."""

    code: str


def parse_aim_field(field: bytes) -> str | None:
    """The 3 symbology-identifier bytes -> ``"]E0"``, or None when absent."""
    chars = field.rstrip(b"\x00")
    if not chars:
        return None
    if chars[:1] == b"]" and len(chars) == 3:
        text = chars.decode("latin-1")
    elif len(chars) >= 2 and chars[:1].isalpha():
        text = "]" + chars[:2].decode("latin-1")
    else:
        return None
    if not (text[1].isascii() and text[1].isalpha() and text[2].isascii() and text[2].isalnum()):
        return None
    return text


class HidPosReassembler:
    """Feed input reports; get a scan when the last report of a code arrives.

    Args:
      report_id: the scanner's input report id (commonly 2); None if the device uses none.
      max_length: a code longer than this is dropped (a stuck "continued" flag).
    """

    def __init__(self, report_id: int | None = 0x02, *, max_length: int = 8192) -> None:
        self.report_id = report_id
        self.max_length = max_length
        self._aim: str | None = None
        self._buf = bytearray()
        self._started = False

    def reset(self) -> None:
        self._buf[:] = bytes(len(self._buf))
        del self._buf[:]
        self._aim = None
        self._started = False

    def feed(self, report: bytes) -> HidPosScan | HidPosError | None:
        """One input report -> a finished scan, an error, or None (more reports to come)."""
        if self.report_id is not None:
            if not report:
                return HidPosError("short_report")
            if report[0] != self.report_id:
                return HidPosError("bad_report_id")
            report = report[1:]
        if len(report) < 5:  # length + AIM + flags at least
            return HidPosError("short_report")
        length = report[0]
        aim_field = report[1:4]
        payload = report[4:-1]
        flags = report[-1]
        if length > len(payload):
            self.reset()
            return HidPosError("bad_length")
        if not self._started:
            self._aim = parse_aim_field(aim_field)
            self._started = True
        self._buf.extend(payload[:length])
        if len(self._buf) > self.max_length:
            self.reset()
            return HidPosError("too_long")
        if flags & 0x01:
            return None
        scan = HidPosScan(self._aim, bytes(self._buf))
        self.reset()
        return scan

    @staticmethod
    def build(
        data: bytes,
        aim: str | None,
        *,
        report_id: int | None = 0x02,
        data_size: int = 56,
        trailer: bytes = b"\x00\x00",
    ) -> list[bytes]:
        """Reports a scanner would send for ``data`` (Honeywell layout by default: 56 data
        bytes, two vendor bytes, then the flags byte). For tests and simulators."""
        aim_field = (aim or "").encode("latin-1")[:3].ljust(3, b"\x00")
        chunks = [data[i : i + data_size] for i in range(0, len(data), data_size)] or [b""]
        reports = []
        for index, chunk in enumerate(chunks):
            more = 1 if index < len(chunks) - 1 else 0
            body = bytes([len(chunk)]) + aim_field + chunk.ljust(data_size, b"\x00")
            body += trailer + bytes([more])
            reports.append((bytes([report_id]) if report_id is not None else b"") + body)
        return reports
