"""``pos-loyalty``: the command line, and the composition root of every process.

Every command prints a human summary, or with ``--json`` one JSON document. Refusals are a
one-line message on stderr and exit code 1; usage and configuration errors exit 2. No
traceback reaches a cashier.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pos_loyalty.config import ConfigError, Settings, load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption, WalletPayment
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.money import format_minor
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.store import FILE_CHECK_EVERY, LedgerError
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service


class UsageError(Exception):
    pass


def _at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise UsageError("--at needs a UTC offset, e.g. 2026-11-22T10:15:00+01:00")
    return parsed


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts other scripts' digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 12


def _line(spec: str) -> BasketLine:
    """``SKU:CATEGORY:QTY:UNIT_PRICE`` (category may be empty), prices in minor units."""
    parts = spec.split(":")
    if len(parts) != 4 or not parts[0]:
        raise UsageError(
            f"--line {spec!r}: expected SKU:CATEGORY:QTY:UNIT_PRICE, e.g. espresso:coffee:1:320"
        )
    sku, category, qty, price = parts
    if not (_digits(qty) and _digits(price)) or not 1 <= int(qty) <= 10_000:
        raise UsageError(
            f"--line {spec!r}: QTY must be a positive integer and UNIT_PRICE an integer >= 0"
        )
    return BasketLine(sku, int(qty), int(price), category or None)


def _redeem(spec: str) -> Redemption:
    program, _, points = spec.partition(":")
    if not program or not _digits(points) or int(points) < 1:
        raise UsageError(f"--redeem {spec!r}: expected PROGRAM:POINTS, e.g. points:200")
    return Redemption(program, int(points))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pos-loyalty", description="Offline-first loyalty at the till."
    )
    parser.add_argument(
        "--config", type=Path, help="configuration file (default: the embedded demo shop)"
    )
    parser.add_argument("--data-dir", type=Path, help="where the ledger lives (overrides the file)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("init", help="create the ledger (and check the configuration)")

    p = sub.add_parser("enrol", help="enrol a new customer and issue a card")
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--phone")
    p.add_argument("--marketing", action="store_true", help="the customer consents to marketing")
    p.add_argument("--card", help="hand out this pre-printed card instead of a new code")
    p.add_argument("--at")

    p = sub.add_parser("card", help="look up, issue, block or replace a card; show its QR")
    card_sub = p.add_subparsers(dest="card_command", required=True, metavar="ACTION")
    q = card_sub.add_parser("show", help="what a scan of CODE shows")
    q.add_argument("code")
    q.add_argument("--at")
    q = card_sub.add_parser("issue", help="a new card for a customer")
    q.add_argument("customer_id")
    q = card_sub.add_parser("block", help="block a lost or stolen card")
    q.add_argument("code")
    q.add_argument("--reason", default="blocked at the till")
    q = card_sub.add_parser("replace", help="block CODE and issue a new card")
    q.add_argument("code")
    q.add_argument("--reason", default="replaced")
    q = card_sub.add_parser("qr", help="render CODE as QR (terminal, or --png/--svg file)")
    q.add_argument("code")
    q.add_argument("--png", type=Path)
    q.add_argument("--svg", type=Path)

    p = sub.add_parser("sale", help="quote or commit a basket")
    p.add_argument("--card", help="the scanned card code")
    p.add_argument("--receipt", help="the POS receipt id (required unless --quote)")
    p.add_argument(
        "--line", action="append", default=[], metavar="SKU:CAT:QTY:PRICE", required=True
    )
    p.add_argument("--redeem", action="append", default=[], metavar="PROGRAM:POINTS")
    p.add_argument("--code", action="append", default=[], dest="codes", metavar="CODE")
    p.add_argument("--flag", action="append", default=[], dest="flags", metavar="FLAG")
    p.add_argument("--wallet", action="append", default=[], metavar="PROGRAM:AMOUNT")
    p.add_argument("--quote", action="store_true", help="only show what would happen")
    p.add_argument("--at")

    p = sub.add_parser("refund", help="refund a receipt, whole or by lines")
    p.add_argument("receipt_id")
    p.add_argument("--refund-id", required=True)
    p.add_argument("--line", action="append", default=[], metavar="SKU:QTY")
    p.add_argument("--at")

    p = sub.add_parser("adjust", help="manual correction of a balance, with a reason")
    p.add_argument("customer_id")
    p.add_argument("program")
    p.add_argument("delta", type=int)
    p.add_argument("--reason", required=True)
    p.add_argument("--at")

    p = sub.add_parser("history", help="a customer's profile, balances and events")
    p.add_argument("customer_id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--before", type=int)

    p = sub.add_parser("ledger", help="ledger maintenance")
    ledger_sub = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    ledger_sub.add_parser(
        "verify", help="check chains and sequences, rebuild and compare projections"
    )
    ledger_sub.add_parser("rebuild", help="replace the projections with a rebuild from the events")

    p = sub.add_parser("agent", help="the headless plugin API for a POS")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--demo", action="store_true", help="create the demo customers on first run")
    for extension in extensions():
        extension.register(sub)
    return parser


def extensions() -> list[Any]:
    """The command modules of ``pos_loyalty.commands`` that are present."""
    from importlib import import_module

    from pos_loyalty.commands import EXTENSIONS

    found = []
    for name in EXTENSIONS:
        try:
            found.append(import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


# The commands that open the card readers: their settings are checked before they start.
READER_COMMANDS = frozenset({"terminal", "devices", "init"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
        if args.command in READER_COMMANDS:
            from pos_loyalty.reader_settings import check_readers

            check_readers(settings)
        return run(args, settings)
    except ConfigError as exc:
        print(f"pos-loyalty: configuration error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"pos-loyalty: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        print(f"pos-loyalty: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except LedgerError as exc:
        print(f"pos-loyalty: ledger error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pos_loyalty.bootstrap import ledger_path, open_service

    if args.command == "agent":
        return run_agent(args, settings)
    for extension in extensions():
        if args.command in extension.COMMANDS:
            return int(extension.run(args, settings))
    if args.command == "card" and args.card_command == "qr":
        return card_qr(args, settings)
    service = open_service(settings)
    try:
        if args.command == "init":
            out: Any = {"ledger": str(ledger_path(settings)), "terminal_id": settings.terminal_id}
            return emit(args, out, f"ledger ready at {out['ledger']}")
        if args.command == "ledger":
            return ledger_command(args, service)
        out = dispatch(args, service)
        return emit(args, out, summary(args, out))
    finally:
        service.ledger.close()


def dispatch(args: argparse.Namespace, service: Service) -> Any:
    cmd = args.command
    if cmd == "enrol":
        profile = Profile(args.name, args.email, args.phone, {"marketing": bool(args.marketing)})
        return service.enrol(profile, _at(args.at), card_code=args.card)
    if cmd == "card":
        if args.card_command == "show":
            return service.lookup(args.code, _at(args.at))
        if args.card_command == "issue":
            return service.issue_card(args.customer_id)
        if args.card_command == "block":
            return service.block_card(args.code, args.reason)
        return service.replace_card(args.code, args.reason)
    if cmd == "sale":
        basket = Basket(
            tuple(_line(s) for s in args.line),
            tuple(args.codes),
            tuple(_redeem(s) for s in args.redeem),
            tuple(args.flags),
            tuple(WalletPayment(r.program, r.points) for r in map(_redeem, args.wallet)),
        )
        raw = {
            "card": args.card,
            "lines": args.line,
            "redeem": args.redeem,
            "codes": args.codes,
            "at": args.at,
            **({"flags": args.flags} if args.flags else {}),
            **({"wallet": args.wallet} if args.wallet else {}),
        }
        request = SaleRequest(basket, args.card, args.receipt, _at(args.at), raw)
        if args.quote:
            return service.quote(request)
        if not args.receipt:
            raise UsageError("sale: --receipt is required to commit (or use --quote)")
        return service.commit(request)
    if cmd == "refund":
        lines = None
        if args.line:
            lines = []
            for spec in args.line:
                sku, _, qty = spec.partition(":")
                if not sku or not _digits(qty) or not 1 <= int(qty) <= 10_000:
                    raise UsageError(f"--line {spec!r}: expected SKU:QTY")
                lines.append(RefundRequestLine(sku, int(qty)))
        raw = {"receipt_id": args.receipt_id, "lines": args.line, "at": args.at}
        return service.refund(
            RefundRequest(
                args.refund_id, args.receipt_id, tuple(lines) if lines else None, _at(args.at), raw
            )
        )
    if cmd == "adjust":
        return service.adjust(args.customer_id, args.program, args.delta, args.reason, _at(args.at))
    if cmd == "history":
        if args.limit < 1 or args.limit > 1000:
            raise UsageError("--limit must be between 1 and 1000")
        if args.before is not None and not 1 <= args.before <= 2**62:
            raise UsageError("--before must be a history position from `history`")
        return service.customer(args.customer_id, limit=args.limit, before=args.before)
    raise UsageError(f"unknown command {cmd!r}")


def ledger_command(args: argparse.Namespace, service: Service) -> int:
    from pos_loyalty.ledger.verify import rebuild, verify

    if args.ledger_command == "rebuild":
        rebuild(service.ledger)
        return emit(args, {"rebuilt": True}, "projections rebuilt from the events")
    report = verify(service.ledger)
    out = {
        "ok": report.ok,
        "events": report.events,
        "terminals": report.terminals,
        "problems": [str(p) for p in report.problems],
    }
    if report.ok:
        return emit(args, out, f"ledger OK: {report.events} events from {report.terminals} till(s)")
    if args.json:
        print(json.dumps(out))
    print(f"pos-loyalty: ledger verify failed: {report.problems[0]}", file=sys.stderr)
    return 1


def card_qr(args: argparse.Namespace, settings: Settings) -> int:
    from pos_loyalty import qr
    from pos_loyalty.domain.cardcode import CardCodeError, normalise_card_code

    try:
        code = normalise_card_code(args.code, settings.card_prefix)
    except CardCodeError as exc:
        raise UsageError(str(exc)) from None
    if args.png:
        qr.qr_png(code, args.png)
    if args.svg:
        qr.qr_svg(code, args.svg)
    if not args.png and not args.svg:
        print(qr.qr_terminal(code), end="")
        print(code)
    return 0


def run_agent(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    import uvicorn

    from pos_loyalty.api import create_app
    from pos_loyalty.bootstrap import open_service, start_embedded_sync
    from pos_loyalty.demo import seed_demo

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = open_service(settings)
    embedded = start_embedded_sync(service)
    host = args.host or settings.api_host
    port = args.port if args.port is not None else settings.api_port
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.demo:
        codes = seed_demo(service)
        print("demo cards: " + ", ".join(codes), flush=True)
    service.ledger.start_file_check(every=FILE_CHECK_EVERY)  # background; damage stops loyalty
    print(
        f"pos-loyalty agent: till {settings.terminal_id}, ledger {service.ledger.path}, "
        f"plugin API on http://{host}:{port}/v1 (OpenAPI at /openapi.json)",
        flush=True,
    )
    # access_log off: request paths can hold scanned codes, which must never be logged.
    print(f"sync: {embedded.note}", flush=True)
    try:
        uvicorn.run(
            create_app(service, status=embedded.status),
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )
    finally:
        embedded.stop()
    return 0


def emit(args: argparse.Namespace, out: Any, text: str) -> int:
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(text)
    return 0


def summary(args: argparse.Namespace, out: dict[str, Any]) -> str:
    parts: list[str] = []
    if "total" in out:
        parts.append(
            f"total {format_minor(out['total'])} (before {format_minor(out['total_before'])}, "
            f"discount {format_minor(out['total_discount'])})"
        )
        for d in out["discounts"]:
            parts.append(f"  {d['label']}: -{format_minor(d['amount'])} on line {d['line'] + 1}")
        if out["earned"]:
            parts.append("earned: " + ", ".join(f"{k} {v}" for k, v in out["earned"].items()))
        parts.extend(out.get("receipt_text", []))
        return "\n".join(parts)
    if "refund_id" in out:
        parts.append(f"refund {out['refund_id']}: hand back {format_minor(out['amount'])}")
        for label, key in (("taken back", "reversed"), ("given back", "returned")):
            if out[key]:
                parts.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in out[key].items()))
    if "customer_id" in out and "card" in out:
        parts.append(
            f"customer {out['customer_id']}, card {out['card']['code']} ({out['card']['status']})"
        )
    if "customer" in out and isinstance(out["customer"], dict):
        c = out["customer"]
        parts.append(f"customer {c['id']}: {c.get('name') or '(no name)'}")
        if "card" in out:
            parts.append(f"card {out['card']['code']} ({out['card']['status']})")
    for program, bal in out.get("balances", {}).items():
        extra = f"/{bal['required']}" if bal["kind"] == "stamps" else ""
        parts.append(f"  {program}: {bal['balance']}{extra} {bal['kind']}")
    for ev in out.get("history", []):
        changes = ", ".join(f"{c['program']} {c['delta']:+d}" for c in ev["changes"])
        parts.append(
            f"  #{ev['position']} {ev['at'][:19]} {ev['kind']} {ev['key'] or ''} {changes}"
        )
    return "\n".join(parts) or json.dumps(out)


if __name__ == "__main__":
    sys.exit(main())
