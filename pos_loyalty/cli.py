"""``pos-loyalty``: the command line, and the composition root of every process.

Every command prints a human summary, or with ``--json`` one JSON document. Refusals are a
one-line message on stderr and exit code 1; usage and configuration errors exit 2. No
traceback reaches a cashier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pos_loyalty.config import ConfigError, Settings, load_settings
from pos_loyalty.domain.basket import BasketLine, Redemption, WalletPayment
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.money import format_minor
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.store import FILE_CHECK_EVERY, LedgerError
from pos_loyalty.service import Profile, RefundRequest, Service


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


def _wallet(spec: str) -> WalletPayment:
    program, _, amount = spec.partition(":")
    if not program or not _digits(amount) or int(amount) < 1:
        raise UsageError(
            f"--wallet {spec!r}: expected PROGRAM:AMOUNT in minor units, e.g. cashback:150"
        )
    return WalletPayment(program, int(amount))


def _validated(model: Any, body: dict[str, Any]) -> Any:
    """``body`` checked by the plugin API's model of the same request: the command line
    accepts what the API accepts (lengths, patterns, counts), and a request sent both ways
    is the same request (the same hash for a retry)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"{where}: {first.get('msg', 'is invalid')}") from None


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

    def fail(code: str, text: str, status: int, message: str | None = None) -> int:
        # With --json the refusal is JSON on stdout too (a script reads one stream).
        if args.json:
            print(json.dumps({"error": {"code": code, "message": message or text}}))
        print(f"pos-loyalty: {text}", file=sys.stderr)
        return status

    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
        if args.command in READER_COMMANDS:
            from pos_loyalty.reader_settings import check_readers

            check_readers(settings)
        return run(args, settings)
    except ConfigError as exc:
        return fail("configuration_error", f"configuration error: {exc}", 2)
    except UsageError as exc:
        return fail("usage_error", str(exc), 2)
    except DomainError as exc:
        return fail(exc.code, f"{exc.code}: {exc.message}", 1, exc.message)
    except LedgerError as exc:
        return fail("ledger_error", f"ledger error: {exc}", 1)
    except BrokenPipeError:
        # The reader of our output went away (``| head``): what was done is done; no
        # traceback, and no second error while Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file the command was asked to write or read
        where = f" {exc.filename}" if exc.filename else ""
        return fail("os_error", f"cannot use{where}: {exc.strerror or exc}", 1)
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
        from pos_loyalty.api import EnrolIn

        checked = _validated(
            EnrolIn,
            {
                "name": args.name,
                "email": args.email,
                "phone": args.phone,
                "consents": {"marketing": bool(args.marketing)},
            },
        )
        profile = Profile(checked.name, checked.email, checked.phone, dict(checked.consents))
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
        from pos_loyalty.api import BasketIn, sale_request

        _at(args.at)  # a bad --at is a usage error (exit 2), as everywhere on the command line
        body = {
            "receipt_id": args.receipt,
            "card": args.card,
            "at": args.at,
            "lines": [
                {"sku": ln.sku, "category": ln.category, "qty": ln.qty, "unit_price": ln.unit_price}
                for ln in map(_line, args.line)
            ],
            "codes": list(args.codes),
            "redeem": [
                {"program": r.program, "points": r.points} for r in map(_redeem, args.redeem)
            ],
            "flags": list(args.flags),
            "wallet": [
                {"program": w.program, "amount": w.amount} for w in map(_wallet, args.wallet)
            ],
        }
        request = sale_request(_validated(BasketIn, body))
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
        from pos_loyalty.api import RefundIn

        refund = _validated(
            RefundIn,
            {
                "refund_id": args.refund_id,
                "receipt_id": args.receipt_id,
                "lines": [{"sku": ln.sku, "qty": ln.qty} for ln in lines] if lines else None,
                "full": not lines,
                "at": args.at,
            },
        )
        return service.refund(
            RefundRequest(
                args.refund_id,
                args.receipt_id,
                tuple(lines) if lines else None,
                _at(args.at),
                refund.model_dump(mode="json"),
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
    from pos_loyalty.listen import cannot_listen

    host = args.host or settings.api_host
    port = args.port if args.port is not None else settings.api_port
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    # Before anything is opened, seeded or printed as started (a terminal or another agent
    # holding the port): one line, exit 1.
    busy = cannot_listen(host, port)
    if busy:
        print(f"pos-loyalty: {busy}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = open_service(settings)
    embedded = start_embedded_sync(service)
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
    except SystemExit as exc:  # uvicorn could not start after all (the port taken since)
        if exc.code in (0, None):
            raise
        print(f"pos-loyalty: the agent could not start on {host}:{port}", file=sys.stderr)
        return 1
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
