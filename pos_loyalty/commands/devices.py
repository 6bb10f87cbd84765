"""``pos-loyalty devices`` and ``pos-loyalty cards``: card readers and cards to print.

* ``devices list``: serial ports, USB devices, cameras (indexes 0-3), with what they look like.
* ``devices listen [READER] [--webcam SOURCE]``: every read of the configured readers (or of
  an ad-hoc webcam / video file), one line each; ``--json``: one JSON object per line.
* ``devices decode IMAGE...``: the codes in still images; ``--json``: one object per image.
* ``cards print --count N --out sheet.svg|sheet.pdf``: new card codes on a printable sheet.
* ``cards keygen --out KEY.pem``: an Ed25519 key pair for signed digital cards.

Exit codes: 0 done, 1 refused or failed (an unreadable image, payment-card data, a file
that already exists), 2 usage. Payment-card data is never printed: such a read shows as
``refused: payment_card`` with no text.

Only the standard library at module level; drivers, OpenCV and the rest load inside ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("devices", "cards")

_EXIT_OK, _EXIT_REFUSED, _EXIT_USAGE = 0, 1, 2
_CAMERA_INDEXES = range(4)


class _Usage(Exception):
    pass


class _Refused(Exception):
    pass


def register(sub: Any) -> None:
    json_flag: dict[str, Any] = {
        "action": "store_true",
        "default": argparse.SUPPRESS,
        "help": "print JSON (one object per line for listen)",
    }
    p = sub.add_parser("devices", help="list, test and listen to card readers")
    dev = p.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    q = dev.add_parser("list", help="serial ports, USB devices and cameras on this computer")
    q.add_argument("--json", **json_flag)
    q.add_argument("--no-cameras", action="store_true", help="do not probe cameras")

    q = dev.add_parser("listen", help="print each read of the configured readers")
    q.add_argument("reader", nargs="?", help="only this configured reader (by name)")
    q.add_argument("--webcam", metavar="SOURCE", help="a camera index, /dev/videoN or a video file")
    q.add_argument("--count", type=int, help="stop after this many reads")
    q.add_argument("--timeout", type=float, help="stop after this many seconds")
    q.add_argument("--json", **json_flag)

    q = dev.add_parser("decode", help="the codes found in still images")
    q.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    q.add_argument(
        "--formats", help="comma-separated: qr,ean,ean8,code128,code39,... (default all)"
    )
    q.add_argument("--json", **json_flag)

    p = sub.add_parser("cards", help="print loyalty cards; keys for signed digital cards")
    cards = p.add_subparsers(dest="cards_command", required=True, metavar="ACTION")
    q = cards.add_parser("print", help="new card codes on a printable sheet (SVG or PDF)")
    q.add_argument("--count", type=int, required=True, help="how many cards (1 to 10000)")
    q.add_argument("--out", type=Path, required=True, help="sheet.svg or sheet.pdf")
    q.add_argument("--shop", help="name printed on the cards (default: the configured one)")
    q.add_argument("--sign", type=Path, metavar="KEY.pem", help="QR holds a signed payload")
    q.add_argument("--json", **json_flag)
    q = cards.add_parser("keygen", help="an Ed25519 key pair for signed digital cards")
    q.add_argument("--out", type=Path, required=True, help="private key file (PEM, mode 0600)")
    q.add_argument("--public", type=Path, help="public key file (default: OUT with .pub)")
    q.add_argument("--json", **json_flag)


def run(args: argparse.Namespace, settings: Any) -> int:
    try:
        if args.command == "devices":
            if args.devices_command == "list":
                return _list(args)
            if args.devices_command == "listen":
                return _listen(args, settings)
            return _decode(args)
        if args.cards_command == "print":
            return _cards_print(args, settings)
        return _keygen(args)
    except _Usage as exc:
        print(f"pos-loyalty: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    except _Refused as exc:
        print(f"pos-loyalty: {exc}", file=sys.stderr)
        return _EXIT_REFUSED


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _quiet_opencv() -> None:
    # OpenCV prints a warning for each camera index it cannot open; keep stderr for people.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


# --------------------------------------------------------------------------- devices list


def _serial_ports() -> tuple[list[dict[str, Any]], str | None]:
    try:
        from serial.tools import list_ports
    except ImportError:
        return [], "pyserial is not installed"
    ports = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        ports.append(
            {
                "device": port.device,
                "description": port.description,
                "vid": f"{port.vid:04x}" if port.vid is not None else None,
                "pid": f"{port.pid:04x}" if port.pid is not None else None,
                "serial_number": port.serial_number,
                "manufacturer": port.manufacturer,
                "product": port.product,
            }
        )
    return ports, None


def _usb_devices() -> tuple[list[dict[str, Any]], str | None]:
    try:
        import usb.core
    except ImportError:
        return [], "pyusb is not installed"
    try:
        found = list(usb.core.find(find_all=True) or [])
    except usb.core.NoBackendError:
        return [], "no libusb backend: install libusb-1.0"
    except usb.core.USBError as exc:
        return [], f"USB not accessible ({exc.strerror or type(exc).__name__})"
    devices = []
    for dev in found:
        entry: dict[str, Any] = {
            "vid": f"{dev.idVendor:04x}",
            "pid": f"{dev.idProduct:04x}",
            "bus": dev.bus,
            "address": dev.address,
            "class": dev.bDeviceClass,
        }
        for key, attr in (("manufacturer", "manufacturer"), ("product", "product")):
            try:
                entry[key] = getattr(dev, attr)
            except (ValueError, usb.core.USBError, NotImplementedError):
                entry[key] = None  # strings need access rights (a udev rule)
        devices.append(entry)
    return devices, None


def _cameras() -> list[dict[str, Any]]:
    _quiet_opencv()
    import cv2

    cameras = []
    for index in _CAMERA_INDEXES:
        node = Path(f"/dev/video{index}")
        if sys.platform.startswith("linux") and not node.exists():
            continue  # no device node: skip the slow open attempt
        cap = cv2.VideoCapture(index)
        try:
            if not cap.isOpened():
                continue
            ok, _frame = cap.read()
            cameras.append(
                {
                    "index": index,
                    "device": str(node) if node.exists() else None,
                    "backend": cap.getBackendName(),
                    "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                    "fps": round(float(cap.get(cv2.CAP_PROP_FPS)), 1),
                    "delivers_frames": bool(ok),
                }
            )
        finally:
            cap.release()
    return cameras


def _list(args: argparse.Namespace) -> int:
    serial, serial_note = _serial_ports()
    usb, usb_note = _usb_devices()
    cameras = [] if args.no_cameras else _cameras()
    if _json(args):
        out = {
            "serial": serial,
            "serial_note": serial_note,
            "usb": usb,
            "usb_note": usb_note,
            "cameras": cameras,
            "cameras_probed": not args.no_cameras,
        }
        print(json.dumps(out, sort_keys=True))
        return _EXIT_OK
    print("Serial ports:")
    for p in serial:
        ids = f" [{p['vid']}:{p['pid']}]" if p["vid"] else ""
        sn = f" serial {p['serial_number']}" if p["serial_number"] else ""
        print(f"  {p['device']}  {p['description']}{ids}{sn}")
    if not serial:
        print(f"  none found{f' ({serial_note})' if serial_note else ''}")
    print("USB devices:")
    for d in usb:
        name = " ".join(x for x in (d.get("manufacturer"), d.get("product")) if x) or "(no name)"
        print(f"  {d['vid']}:{d['pid']}  bus {d['bus']} address {d['address']}  {name}")
    if not usb:
        print(
            f"  none found ({usb_note})"
            if usb_note
            else "  none found (or no USB host access here)"
        )
    print("Cameras:")
    if args.no_cameras:
        print("  not probed (--no-cameras)")
    for c in cameras:
        print(
            f"  {c['index']}  {c['device'] or ''} {c['width']}x{c['height']} @ {c['fps']} fps "
            f"({c['backend']}{'' if c['delivers_frames'] else ', no frames'})"
        )
    if not cameras and not args.no_cameras:
        print("  none found (probed indexes 0-3)")
    return _EXIT_OK


# --------------------------------------------------------------------------- decode


def _read_json(read: Any) -> dict[str, Any]:
    """A CardRead as JSON; a refused read carries no data (its text/raw are empty anyway)."""
    out: dict[str, Any] = {
        "symbology": read.symbology.value,
        "aim": read.aim,
        "text": read.text if read.rejected is None else None,
        "rejected": read.rejected,
    }
    if read.rejected is None and read.raw != read.text.encode("utf-8"):
        out["raw_hex"] = read.raw.hex()
    return out


def _read_line(read: Any) -> str:
    if read.rejected is not None:
        return f"{read.symbology.value}: refused: {read.rejected} (data not shown)"
    text = read.text.encode("unicode_escape").decode("ascii")  # one line, control chars shown
    return f"{read.symbology.value}{f' {read.aim}' if read.aim else ''}: {text}"


def _decode(args: argparse.Namespace) -> int:
    _quiet_opencv()
    from drivers.decode import SUPPORTED_FORMATS, DecodeError, FrameDecoder, decode_file
    from drivers.decode import parse_formats as parse

    try:
        formats = parse(args.formats.split(",")) if args.formats else SUPPORTED_FORMATS
    except ValueError as exc:
        raise _Usage(f"--formats: {exc}") from None
    decoder = FrameDecoder(formats=formats)
    failed = refused = False
    for image in args.images:
        try:
            reads = decode_file(image, decoder=decoder)
        except DecodeError as exc:
            failed = True
            if _json(args):
                print(json.dumps({"image": str(image), "codes": [], "error": str(exc)}))
            else:
                print(f"pos-loyalty: {exc}", file=sys.stderr)
            continue
        refused = refused or any(r.rejected for r in reads)
        if _json(args):
            codes = [_read_json(r) for r in reads]
            print(json.dumps({"image": str(image), "codes": codes, "error": None}))
        elif not reads:
            print(f"{image}: no code found")
        else:
            for read in reads:
                print(f"{image}: {_read_line(read)}")
    if refused:
        print(
            "pos-loyalty: payment card data refused: it is never shown or stored", file=sys.stderr
        )
    return _EXIT_REFUSED if failed or refused else _EXIT_OK


# --------------------------------------------------------------------------- listen


def _event_json(event: Any) -> dict[str, Any]:
    from drivers.model import CardRead

    if isinstance(event, CardRead):
        return {"type": "read", "reader": event.source, **_read_json(event)}
    return {
        "type": "status",
        "reader": event.source,
        "state": event.state.value,
        "message": event.message,
    }


def _listen(args: argparse.Namespace, settings: Any) -> int:
    import asyncio

    if args.count is not None and args.count < 1:
        raise _Usage("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise _Usage("--timeout must be a positive number of seconds")
    if args.webcam and args.reader:
        raise _Usage("give either a READER name or --webcam, not both")
    _quiet_opencv()
    from drivers.model import CardRead
    from drivers.stream import ReaderStream

    entries: list[Any]
    if args.webcam:
        entries = [{"name": "webcam", "kind": "webcam", "url": args.webcam}]
    else:
        entries = list(settings.readers)
        if args.reader:
            entries = [r for r in entries if r.name == args.reader]
            if not entries:
                names = ", ".join(r.name for r in settings.readers) or "none"
                raise _Usage(f"no reader named {args.reader!r} (configured: {names})")
        entries = [r for r in entries if r.kind != "keyboard"]
        if not entries:
            raise _Refused(
                "no reader to listen to: the keyboard reader is read by the terminal itself "
                "(configure a [[readers]] block, or use --webcam SOURCE)"
            )
    try:
        stream = ReaderStream.from_config(entries)
    except ValueError as exc:
        raise _Usage(f"readers: {exc}") from None

    reads = 0

    async def main() -> None:
        nonlocal reads
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout is None else loop.time() + args.timeout
        async with stream:
            while True:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                if left == 0.0:
                    return
                event = await stream.get(timeout=left)
                if event is None:
                    return  # the deadline passed, or the stream stopped
                if _json(args):
                    print(json.dumps(_event_json(event)), flush=True)
                elif isinstance(event, CardRead):
                    print(f"{event.source}: {_read_line(event)}", flush=True)
                else:
                    print(f"{event.source}: {event.state.value} ({event.message})", flush=True)
                if isinstance(event, CardRead):
                    reads += 1
                    if args.count is not None and reads >= args.count:
                        return
                elif args.webcam and _ended(event):
                    return

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends listening: not an error
        asyncio.run(main())
    return _EXIT_OK


def _ended(event: Any) -> bool:
    """A video file played to its end, or a source that could not be opened once."""
    state: str = event.state.value
    return (state == "disconnected" and event.message == "end of video") or (
        state == "error" and event.message == "cannot open video file"
    )


# --------------------------------------------------------------------------- cards


def _cards_print(args: argparse.Namespace, settings: Any) -> int:
    import secrets

    from pos_loyalty.domain.cardcode import make_card_code

    if not 1 <= args.count <= 10000:
        raise _Usage("--count must be between 1 and 10000")
    suffix = args.out.suffix.lower()
    if suffix not in (".svg", ".pdf"):
        raise _Usage("--out must end in .svg or .pdf")
    from drivers import cards

    payloads = None
    key = None
    if args.sign:
        try:
            key = cards.load_private_key(args.sign)
        except (OSError, ValueError, TypeError) as exc:
            raise _Refused(
                f"--sign {args.sign}: cannot load the key ({type(exc).__name__})"
            ) from None
    # Like the till's own new cards: a random serial below 10**11 (its 13 digits start with 0,
    # outside every payment network's range). Handing a printed card out checks it is unused.
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < args.count:
        code = make_card_code(settings.card_prefix, secrets.randbelow(10**11))
        if code not in seen:
            seen.add(code)
            codes.append(code)
    if key is not None:
        payloads = [cards.sign_card(code, key) for code in codes]
    shop = args.shop or settings.shop_name
    files: list[str] = []
    if suffix == ".pdf":
        cards.card_sheet_pdf(codes, shop, args.out, qr_payloads=payloads)
        files.append(str(args.out))
    else:
        pages = cards.card_sheets_svg(codes, shop, qr_payloads=payloads)
        for n, page in enumerate(pages, start=1):
            path = args.out if n == 1 else args.out.with_name(f"{args.out.stem}-{n}{suffix}")
            path.write_text(page, encoding="utf-8")
            files.append(str(path))
    if _json(args):
        print(json.dumps({"codes": codes, "files": files, "signed": key is not None}))
    else:
        for code in codes:
            print(code)
        print(
            f"{len(codes)} card(s) on {len(files)} page file(s): {', '.join(files)}",
            file=sys.stderr,
        )
    return _EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    from drivers import cards

    public = args.public or args.out.with_suffix(".pub")
    if public.absolute() == args.out.absolute() or public.resolve() == args.out.resolve():
        raise _Refused(
            f"the private and the public key would both be {public}: give --public another file"
        )
    for path in (args.out, public):
        if path.exists():
            raise _Refused(f"{path} already exists: not overwriting a key")
    key = cards.generate_key()
    try:
        cards.save_private_key(key, args.out)
    except OSError as exc:
        raise _Refused(f"cannot write the key: {exc.strerror or type(exc).__name__}") from None
    try:
        cards.save_public_key(key.public_key(), public)
    except OSError as exc:
        args.out.unlink(missing_ok=True)  # no half-made pair: a retry starts clean
        raise _Refused(f"cannot write the key: {exc.strerror or type(exc).__name__}") from None
    kid = cards.key_id(key.public_key())
    if _json(args):
        print(json.dumps({"key_id": kid, "private": str(args.out), "public": str(public)}))
    else:
        print(f"key {kid}: private {args.out} (keep it secret), public {public} (for every till)")
    return _EXIT_OK
