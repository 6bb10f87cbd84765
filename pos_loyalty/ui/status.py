"""The status bar's content: a plain record and its wording (no Textual here).

Words, not colours, carry the meaning (ONLINE/OFFLINE, UNPLUGGED), so a monochrome screen
reads the same. When the line is too long for the terminal, the least important parts go.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

_READER_WORDS = {
    "connected": "ok",
    "disconnected": "UNPLUGGED",
    "reconnecting": "reconnecting",
    "error": "ERROR",
    "waiting": "starting",
}


@dataclass(frozen=True)
class StatusState:
    online: bool = False
    sync_configured: bool = False
    sync_message: str = "sync not configured"
    events_waiting: int | None = None
    last_sync: datetime | None = None
    readers: tuple[tuple[str, str], ...] = ()  # (name, state) in configured order
    terminal_id: str = ""
    store_id: str = ""
    api: str = ""  # "API :8765", "API off: port 8765 busy", "" when not embedded
    programs_version: int = 0  # the central server's program configuration in use (0: none)
    extra: tuple[str, ...] = field(default=())

    def with_reader(self, name: str, state: str) -> StatusState:
        readers = list(self.readers)
        for i, (n, _) in enumerate(readers):
            if n == name:
                readers[i] = (name, state)
                break
        else:
            readers.append((name, state))
        return replace(self, readers=tuple(readers))


def status_parts(state: StatusState) -> list[tuple[int, str, str]]:
    """(priority, text, short text); higher priority numbers are dropped first."""
    if state.online:
        sync = short_sync = "ONLINE"
    else:
        why = state.sync_message if state.sync_configured else "sync not configured"
        sync = f"OFFLINE ({why})" if why else "OFFLINE"
        short_sync = "OFFLINE"
    parts = [(0, sync, short_sync)]
    if state.events_waiting is not None:
        waiting = f"{state.events_waiting} waiting"
        parts.append((1, waiting, waiting))
    readers = ", ".join(f"{n} {_READER_WORDS.get(s, s)}" for n, s in state.readers)
    trouble = ", ".join(
        f"{n} {_READER_WORDS.get(s, s)}" for n, s in state.readers if s != "connected"
    )
    parts.append(
        (2, f"readers: {readers}" if readers else "keyboard only", trouble or "readers ok")
    )
    last = state.last_sync.strftime("%H:%M") if state.last_sync else "never"
    parts.append((3, f"last sync {last}", f"last sync {last}"))
    parts.append((4, f"{state.terminal_id}@{state.store_id}", state.terminal_id))
    if state.api:
        parts.append((5, state.api, state.api))
    if state.programs_version:
        programs = f"programs v{state.programs_version}"
        parts.append((5, programs, programs))
    parts.extend((6, e, e) for e in state.extra)
    return parts


def status_text(state: StatusState, width: int = 200) -> str:
    """The status line: the least important parts go first, then the rest gets terse."""
    parts = status_parts(state)
    short = False
    while True:
        text = " | ".join(p[2] if short else p[1] for p in parts)
        if len(text) <= width:
            return text
        if parts[-1][0] > 2:
            parts.pop(max(range(len(parts)), key=lambda i: parts[i][0]))
        elif not short:
            short = True
        else:
            return text[: max(width - 1, 0)] + "~"
