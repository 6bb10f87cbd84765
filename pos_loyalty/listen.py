"""Whether a port can be listened on, checked before a server starts (the central server,
the agent): a busy port is then one line and exit 1, before anything is printed as
started or written, rather than uvicorn's log and its exit code 3."""

from __future__ import annotations


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (in use, not an address of this
    machine, a privileged port), else None: tried here, as uvicorn will bind it, so that a
    busy port is one line and exit 1 rather than uvicorn's log and its exit code 3."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        why = exc.strerror or str(exc)
        hint = " (another server runs there? choose --port)" if exc.errno == 98 else ""
        return f"cannot listen on {host}:{port}: {why}{hint}"
    return None
