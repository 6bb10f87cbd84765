"""Capture every log record (all loggers, DEBUG) and check that no secret leaked into one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def all_logs() -> Iterator[list[logging.LogRecord]]:
    root = logging.getLogger()
    handler = _Collect()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def rendered(record: logging.LogRecord) -> str:
    """Everything a formatter could print from a record: message, args, exception."""
    parts = [record.getMessage(), repr(record.args), str(record.msg)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def assert_not_logged(records: list[logging.LogRecord], *secrets: str) -> None:
    for record in records:
        text = rendered(record)
        for secret in secrets:
            assert secret not in text, f"secret data in a log record from {record.name}"
