"""The outcome of the sync worker's last round, as a small file in the till's data folder.

A till may be synced by a separate ``pos-loyalty sync`` process (the systemd unit) while the
agent or terminal serves the POS: the agent must still know whether the central server
confirms redemptions right now (DESIGN invariant 8: offline limits apply only offline). The
worker writes this file after every round, success or failure; the agent reads it. A file
rather than a ledger row: it is rewritten every round and is not part of the ledger's
history (a ledger write per round would also queue behind the till's sales).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

STATUS_FILE = "sync-status.json"


@dataclass(frozen=True)
class RoundStatus:
    """What the last round of a sync worker found.

    Attributes:
      online: whether that round reached the server and completed.
      at: when the round ended (aware).
      last_success: when a round last completed (aware), or None.
      last_error: why the last round failed, or None.
    """

    online: bool
    at: datetime
    last_success: datetime | None
    last_error: str | None


def write_status(data_dir: Path, status: RoundStatus) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    body = json.dumps(
        {
            "online": status.online,
            "at": status.at.isoformat(),
            "last_success": status.last_success.isoformat() if status.last_success else None,
            "last_error": status.last_error,
        }
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sync-status-", dir=data_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(tmp, data_dir / STATUS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(data_dir: Path) -> RoundStatus | None:
    """The last round's status, or None when there is none or it cannot be read."""
    try:
        raw = json.loads((data_dir / STATUS_FILE).read_text(encoding="utf-8"))
        success = raw.get("last_success")
        return RoundStatus(
            online=raw["online"] is True,
            at=datetime.fromisoformat(raw["at"]),
            last_success=datetime.fromisoformat(success) if success else None,
            last_error=raw.get("last_error"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
