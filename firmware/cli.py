"""The `tpe` console command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_OK, EXIT_USAGE, EXIT_READER, EXIT_CARD, EXIT_DECLINED, EXIT_STORE, EXIT_WAITING = 0, 2, 3, 4, 5, 6, 7


def _card_read(args: argparse.Namespace) -> int:
    from emv.aids import KNOWN_AIDS
    from emv.errors import EmvError
    from emv.inspection import read_card
    from firmware import driver, terminal_data
    from firmware.reader import ReaderError

    aid = bytes.fromhex(args.aid) if args.aid else None
    try:
        report, name, session = _on_card(args.reader, args.wait, lambda session: driver.run(
            read_card(KNOWN_AIDS, terminal_data.for_inspection(), aid),
            driver.card_sender(session.transmit, session.protocol)))
    except ReaderError as exc:
        return _fail(args, "reader", str(exc), EXIT_READER)
    except EmvError as exc:
        return _fail(args, "card", str(exc), EXIT_CARD)
    result = report.as_dict()
    result["reader"] = name
    result["protocol"] = session.protocol
    result["atr"] = session.atr.hex().upper()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_card_text(result))
    return EXIT_OK


def _sale(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from emv.outcome import OutcomeKind
    from firmware import driver, sale
    from firmware.config import ConfigError, load_config
    from firmware.host_client import HostClientError
    from firmware.host_store import HostStoreError
    from firmware.money import MoneyError, currency, parse_amount
    from firmware.payment_records import REFUND, RecordError
    from firmware.pin_pad import PinPadError
    from firmware.reader import CardSession, ReaderError
    from firmware.terminal_keys import TerminalKeysError
    from sim.card.issuer import ScriptedAuthorizer

    try:
        config = load_config(args.config)
        if args.currency:
            config = sale.with_currency(config, *currency(args.currency))
        terminal = config.kernel.terminal
        amount = parse_amount(args.amount, terminal.currency_exponent)
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    except MoneyError as exc:
        return _fail(args, "usage", str(exc), EXIT_USAGE)
    if args.issuer_declines and not args.scripted_issuer:
        return _fail(args, "usage", "--issuer-declines goes with --scripted-issuer", EXIT_USAGE)
    if config.host is None and not (args.scripted_issuer or args.no_host):
        return _fail(args, "usage", f"{config.source}: no [host] section: configure the acquirer host "
                                    "there, or pass --scripted-issuer (simulated cards only) or --no-host",
                     EXIT_USAGE)
    choice: int | str = int(args.choose) if args.choose.isdigit() else args.choose
    with ExitStack() as stack:
        try:
            store = sale.state_store(config)
            stack.callback(store.close)
            keys = sale.terminal_keys_of(config, store)
        except (HostStoreError, TerminalKeysError) as exc:
            return _fail(args, "state", str(exc), EXIT_USAGE)
        pin_pad = sale.pin_pad_of(config, keys) if keys is not None else None
        authorizer: Any = None
        recorder = None
        if args.no_host and config.host is not None:
            try:  # an offline approval still leaves its advice in the queue
                recorder = sale.recorder_of(config, store)
                sale.recover(recorder.payments, config)
            except RecordError as exc:
                return _fail(args, "state", str(exc), EXIT_STORE)
        if args.scripted_issuer:
            authorizer = ScriptedAuthorizer(decline=args.issuer_declines)
        elif not args.no_host and keys is not None:
            try:
                authorizer = stack.enter_context(sale.acquirer(config, store, keys))
            except HostClientError as exc:
                return _fail(args, "host", str(exc), EXIT_USAGE)

        def on_card(session: CardSession) -> sale.SaleResult:
            fulfil = driver.card_sender(session.transmit, session.protocol, errors=(ReaderError,))
            return sale.run_sale(config, amount, fulfil, pin=args.pin, choice=choice, authorizer=authorizer,
                                 pin_pad=pin_pad, interactive=args.pin is None and sale.interactive_console(),
                                 transaction_type=REFUND if args.refund else 0, recorder=recorder)

        try:
            result, _name, _session = _on_card(args.reader or config.reader.name, args.wait, on_card)
        except ReaderError as exc:
            return _fail(args, "reader", str(exc), EXIT_READER)
        except PinPadError as exc:
            return _fail(args, "pin pad", str(exc), EXIT_USAGE)
        except HostClientError as exc:
            return _fail(args, "host", str(exc), EXIT_CARD)
        except sale.SaleJournalError as exc:  # the payment is recorded: show it, then the error
            if exc.result is not None:
                result = exc.result
                print(json.dumps(sale.as_json(result), indent=2) if args.json else sale.as_text(result))
            return _fail(args, "state", str(exc), EXIT_STORE)
        except RecordError as exc:
            return _fail(args, "state", str(exc), EXIT_STORE)
    if args.json:
        print(json.dumps(sale.as_json(result), indent=2))
    else:
        print(sale.as_text(result))
    kind = result.outcome.kind
    if kind.approved:
        return EXIT_OK
    return EXIT_CARD if kind in (OutcomeKind.TERMINATED, OutcomeKind.TRY_AGAIN) else EXIT_DECLINED


def _run(args: argparse.Namespace) -> int:
    from firmware import logs, runtime
    from firmware.config import ConfigError, load_config
    from firmware.ui_script import ScriptedUi, ScriptError, load_script

    logs.setup(logging.DEBUG if args.verbose > 1 else logging.INFO)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    ui: Any
    if args.screenshots is not None and args.script is None:
        return _fail(args, "usage", "--screenshots goes with --script", EXIT_USAGE)
    if args.script is not None:
        try:
            script = load_script(args.script)
            inner = runtime.touch_ui(headless=True) if args.screenshots is not None else None
        except ScriptError as exc:
            return _fail(args, "usage", str(exc), EXIT_USAGE)
        except Exception as exc:  # ImportError, or the UI's own error: said, never a traceback
            return _fail(args, "ui", f"the touchscreen cannot draw the screenshots: {exc}", EXIT_USAGE)
        ui = ScriptedUi(script, inner=inner, screenshots=args.screenshots)
    else:
        try:
            ui = runtime.touch_ui()
        except Exception as exc:  # ImportError, or the UI's own error
            return _fail(args, "ui", f"the touchscreen cannot start ({exc}): pass --script FILE to run "
                                     "headless", EXIT_USAGE)
    try:
        return runtime.main(config, ui)
    except runtime.StartError as exc:
        return _fail(args, exc.kind, str(exc), EXIT_STORE)


def _on_card(reader_name: str | None, wait: float, action: Callable[[Any], T]) -> tuple[T, str, Any]:
    """Connect to the card in the reader (waiting up to `wait` s), run `action` on the session,
    always disconnect and release the PC/SC context. Returns the result, reader name, session."""
    from firmware.reader import PcscReader

    reader = PcscReader()
    try:
        name = reader.pick(reader_name)
        session = reader.connect_when_ready(name, wait)
        try:
            return action(session), name, session
        finally:
            session.disconnect()
    finally:
        reader.close()


def _saf_status(args: argparse.Namespace) -> int:
    import datetime

    from firmware.config import ConfigError, load_config
    from firmware.keystore import Keystore, KeystoreError
    from firmware.money import alpha, format_amount
    from firmware.offline_limits import message
    from firmware.saf_figures import figures
    from firmware.saf_queue import FILE_NAME, SafQueue, SafQueueError

    try:
        config = load_config(args.config)
        folder = config.state.folder
        queue = SafQueue(folder / FILE_NAME, Keystore.open(folder))
        found = figures(queue, config.offline, datetime.datetime.now(datetime.UTC))
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    except (KeystoreError, SafQueueError) as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)
    exponent = config.kernel.terminal.currency_exponent
    if args.json:
        print(json.dumps(found.as_dict()))
        return EXIT_OK
    print(f"Waiting     {found.count}")
    for currency, amount in sorted(found.amount_per_currency.items()):
        print(f"Amount      {format_amount(amount, exponent)} {alpha(currency)}")
    print(f"Oldest      {found.oldest.isoformat() if found.oldest else '-'}")
    if found.overdue:
        print(f"ALERT       {message('overdue')}")
    if found.declined_after_the_fact:
        print(f"ALERT       {found.declined_after_the_fact} payment(s) taken offline were DECLINED by the "
              "bank afterwards: `tpe payments` lists them")
    if found.set_aside:
        print(f"ALERT       {found.set_aside} damaged item(s) set aside for a technician")
    return EXIT_OK


def _saf_flush(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from firmware import sale
    from firmware.config import ConfigError, load_config
    from firmware.host_client import HostClientError
    from firmware.host_store import HostStoreError
    from firmware.terminal_keys import TerminalKeysError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    if config.host is None or config.dukpt is None:
        return _fail(args, "usage", f"{config.source}: forwarding needs the [host] and [dukpt] sections",
                     EXIT_USAGE)
    with ExitStack() as stack:
        try:
            store = sale.state_store(config)
            stack.callback(store.close)
            keys = sale.terminal_keys_of(config, store)
            if keys is None:
                return _fail(args, "usage", "forwarding needs the [dukpt] section", EXIT_USAGE)
            authorizer = stack.enter_context(sale.acquirer(config, store, keys))
            report = authorizer.forward(args.window)
            status = authorizer.client.recorder.queue.status()
        except (HostStoreError, TerminalKeysError) as exc:
            return _fail(args, "state", str(exc), EXIT_STORE)
        except HostClientError as exc:
            return _fail(args, "host", str(exc), EXIT_STORE)
    out = {**sale.forward_summary(report), "waiting": status.count}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"Sent        {out['sent']} ({out['acknowledged']} acknowledged)")
        if out["refused"]:
            print(f"ALERT       {len(out['refused'])} payment(s) DECLINED by the bank after the fact")
        if out["set_aside"]:
            print(f"ALERT       {len(out['set_aside'])} damaged item(s) set aside for a technician")
        print(f"Waiting     {status.count}" + (f" ({report.problem})" if report.problem else ""))
    if report.set_aside:
        return EXIT_STORE
    return EXIT_OK if status.count == 0 else EXIT_WAITING


def _payments(args: argparse.Namespace) -> int:
    from firmware.config import ConfigError, load_config
    from firmware.money import alpha, format_amount
    from firmware.payment_records import RecordError, open_payments
    from firmware.payments import PaymentsError

    try:
        config = load_config(args.config)
        payments = open_payments(config.state.folder)
        found = payments.all(last=args.last)
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    except (RecordError, PaymentsError) as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)
    if args.json:
        print(json.dumps([payment.as_dict() for payment in found]))
        return EXIT_OK
    exponent = config.kernel.terminal.currency_exponent
    for p in found:
        print(f"{p.id:6d}  {p.created:%Y-%m-%d %H:%M:%S}  {p.kind:6}  "
              f"{format_amount(p.amount, exponent):>10} {alpha(p.currency)}  {p.state.value:16}  "
              f"{p.pan_masked or '':19}  {p.note or ''}".rstrip())
    return EXIT_OK


EXIT_BROKEN = 8  # tpe journal: a journal or archive that does not verify


def _journal_of(args: argparse.Namespace) -> Any:
    """The fiscal journal of the configuration's [state] folder, or the exit status."""
    from firmware.config import ConfigError, load_config
    from firmware.journal import Journal, JournalError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(args, "config", str(exc), EXIT_USAGE)
    try:
        return Journal(config.state.folder)
    except JournalError as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)


def _journal_verify(args: argparse.Namespace) -> int:
    from firmware.journal_verify import VerifyError, verify_path

    try:
        pem = Path(args.pubkey).read_bytes() if args.pubkey else None
    except OSError as exc:
        return _fail(args, "usage", f"cannot read the public key: {exc}", EXIT_USAGE)
    try:
        report = verify_path(Path(args.path), pem)
    except VerifyError as exc:
        return _fail(args, "usage", str(exc), EXIT_USAGE)
    print(json.dumps(report.as_json()) if args.json else report.as_text())
    return EXIT_OK if report.ok else EXIT_BROKEN


def _journal_period(args: argparse.Namespace) -> int | None:
    from firmware.journal_archive import ArchiveError, period_bounds

    try:
        if args.period is not None:
            period_bounds(args.period)
    except ArchiveError as exc:
        return _fail(args, "usage", str(exc), EXIT_USAGE)
    return None


def _journal_archive(args: argparse.Namespace) -> int:
    from firmware.journal import JournalError
    from firmware.journal_archive import archive

    journal = _journal_period(args) or _journal_of(args)
    if isinstance(journal, int):
        return journal
    try:
        path = archive(journal, args.period, args.out or journal.folder / "archives")
    except JournalError as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)
    finally:
        journal.close()
    act = journal.head("archive")
    print(f"Archive     {path}")
    print(f"Records     {act.data['records']}")
    print(f"SHA-256     {act.data['sha256']}")
    return EXIT_OK


def _journal_export(args: argparse.Namespace) -> int:
    from firmware.journal import JournalError
    from firmware.journal_export import export_csv

    journal = _journal_period(args) or _journal_of(args)
    if isinstance(journal, int):
        return journal
    out = args.out or Path(f"tickets-{args.period or 'all'}.csv")
    try:
        done = export_csv(journal, out, period=args.period, decimal_comma=args.decimal_comma)
    except JournalError as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)
    finally:
        journal.close()
    print(f"Export      {done.path} ({done.tickets} ticket(s))")
    return EXIT_OK


def _journal_close(args: argparse.Namespace) -> int:
    import datetime

    from firmware import fiscal
    from firmware.journal import JournalError
    from firmware.money import currency, format_amount

    journal = _journal_of(args)
    if isinstance(journal, int):
        return journal
    today = datetime.datetime.now().astimezone().date()
    period = args.period or {"day": today.isoformat(), "month": today.strftime("%Y-%m"),
                             "year": str(today.year)}[args.kind]
    try:
        record = fiscal.close(journal, args.kind, period)
    except fiscal.FiscalError as exc:
        return _fail(args, "usage", str(exc), EXIT_USAGE)
    except JournalError as exc:
        return _fail(args, "store", str(exc), EXIT_STORE)
    finally:
        journal.close()
    data = record.data
    if args.json:
        print(json.dumps({"seq": record.seq, "extract": record.extract, **data}))
        return EXIT_OK
    print(f"Closure     {args.kind} {period}: record {record.seq} ({record.extract})")
    print(f"Tickets     {data['from']} to {data['to']}")
    for code, totals in sorted(data["totals"].items()):
        amount = format_amount(totals["total"], currency(code)[1])
        print(f"Total       {amount} {code} ({totals['count']} ticket(s))")
    for code, totals in sorted(data["perpetual"].items()):
        print(f"Perpetual   {format_amount(totals['total'], currency(code)[1])} {code}")
    return EXIT_OK


def _journal_status(args: argparse.Namespace) -> int:
    from firmware.journal import CHAINS, PUBLIC_KEY_FILE, all_chains
    from firmware.journal_verify import VerifyError, check_heads

    journal = _journal_of(args)
    if isinstance(journal, int):
        return journal
    try:
        heads = {chain: record for chain in (*CHAINS, *all_chains(training=True))
                 if (record := journal.head(chain)) is not None}
        try:  # read-only: the terminal's start still journals what it finds
            guard = [str(p) for p in check_heads(journal.folder, journal.key.public_pem())]
        except VerifyError as exc:
            guard = [str(exc)]
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"key": journal.key.id, "public_key": str(journal.folder / PUBLIC_KEY_FILE),
                          "heads": {c: {"seq": r.seq, "at": r.at, "type": r.type, "extract": r.extract}
                                    for c, r in heads.items()},
                          "guard_ok": not guard, "guard": guard}))
    else:
        print(f"Key         {journal.key.id} ({journal.folder / PUBLIC_KEY_FILE})")
        for chain, record in heads.items():
            print(f"  {chain:18} seq {record.seq:<8} {record.at}  {record.type:16} {record.extract}")
        print("Guard       " + ("heads file and database agree" if not guard else "ALERT"))
        for problem in guard:
            print(f"ALERT       {problem}")
    return EXIT_OK if not guard else EXIT_BROKEN


def _fail(args: argparse.Namespace, kind: str, message: str, code: int) -> int:
    logging.getLogger("tpe").error("%s error: %s", kind, message)
    if getattr(args, "json", False):
        print(json.dumps({"error": kind, "message": message}))
    else:
        print(f"tpe: {kind} error: {message}", file=sys.stderr)
    return code


def _card_text(r: dict[str, Any]) -> str:
    lines = [f"Reader      {r['reader']} ({r['protocol']}, ATR {r['atr']})",
             f"Selection   {r['selection_method']}"]
    for app in r["applications"]:
        flags = " [blocked]" if app["blocked"] else ""
        lines.append(f"  - {app['aid']}  {app['label'] or '':16} {app['scheme'] or '':12}"
                     f" priority {app['priority'] or '-'}{flags}")
    if r["aid"] is None:
        lines.append("No application could be selected.")
        return "\n".join(lines)
    cvm = r["cvm_list"]
    rows = [
        ("Application", f"{r['label']} ({r['aid']})"),
        ("Preferred", r["preferred_name"]),
        ("PAN", r["pan_masked"]),
        ("PAN seq.", r["pan_sequence_number"]),
        ("Expiry", r["expiry"]),
        ("Effective", r["effective"]),
        ("Country", r["issuer_country"]),
        ("Language", ", ".join(r["language"]) or None),
        ("AIP", ", ".join(r["aip"]) or "none"),
        ("AFL", "; ".join(f"SFI {e['sfi']} rec {e['first']}-{e['last']} (ODA {e['oda']})"
                          for e in r["afl"])),
        ("CA key", None if r["ca_public_key_index"] is None else f"{r['ca_public_key_index']:02X}"),
        ("Usage", ", ".join(r["application_usage_control"]) or None),
    ]
    lines += [f"{k:11} {v}" for k, v in rows if v is not None]
    if cvm:
        lines.append(f"CVM list    X={cvm['amount_x']} Y={cvm['amount_y']}")
        lines += [f"  - {rule['method']} / {rule['condition']}"
                  + (" (else next)" if rule["continue_if_unsuccessful"] else "")
                  for rule in cvm["rules"]]
    return "\n".join(lines)


def _sim_card_profiles(args: argparse.Namespace) -> int:
    from sim.card.profile import load_profile, profile_names

    profiles = [load_profile(n) for n in profile_names()]
    if args.json:
        print(json.dumps([{"name": p.name, "description": p.description, "protocol": p.protocol,
                           "expected": p.expected} for p in profiles], indent=2))
    else:
        for p in profiles:
            print(f"{p.name:28} {p.protocol}  {p.description}")
    return EXIT_OK


def _sim_card_serve(args: argparse.Namespace) -> int:
    from sim.card.serve import serve

    return serve(profile=args.profile, host=args.host, port=args.port, timing=args.timing,
                 inserted=not args.removed)


def _sim_host_serve(args: argparse.Namespace) -> int:
    from sim.host.serve import serve

    if args.listen is None or args.pki is None:
        return _fail(args, "usage", "tpe sim host needs --listen HOST:PORT and --pki DIR", EXIT_USAGE)
    return serve(listen=args.listen, pki_dir=args.pki, ledger=args.ledger)


def _sim_broker(args: argparse.Namespace) -> int:
    from sim.fleet.serve import serve

    return serve(args.folder, args.port)


def _sim_host_ledger(args: argparse.Namespace) -> int:
    from sim.host.serve import print_ledger

    return print_ledger(args.ledger, as_json=args.json)


def _sim_modem(args: argparse.Namespace) -> int:
    from sim.modem.serve import serve

    conditions = {"rtt_ms": args.rtt, "bandwidth_kbit": args.bandwidth, "signal_dbm": args.signal,
                  "registration": args.register, "technology": args.technology,
                  "open_delay_ms": args.open_delay, "attach_ms": args.attach, "required_apn": args.apn}
    return serve(args.dialect, pin=args.pin, conditions=conditions, reboot_seconds=args.reboot_seconds,
                 seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpe", description="Open card-payment terminal firmware.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug: APDU headers and status words)")
    sub = parser.add_subparsers(dest="command", required=True)

    card = sub.add_parser("card", help="card reader tools").add_subparsers(dest="card_cmd", required=True)
    read = card.add_parser("read", help="non-destructive read of the inserted card")
    read.add_argument("--reader", help="reader name (or its beginning); default: the first")
    read.add_argument("--json", action="store_true", help="print one JSON object")
    read.add_argument("--aid", help="read this application (hex) instead of the first by priority")
    read.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                      help="how long to wait for a card (default 10)")
    read.set_defaults(func=_card_read)

    sale = sub.add_parser(
        "sale", help="a headless test sale on the reader, authorized by the acquirer host",
        description="Runs one EMV sale on the inserted card. Authorizations go to the acquirer host "
                    "of the configuration's [host] section; --scripted-issuer sends them instead to a "
                    "SCRIPTED issuer that knows only the simulated cards (simulator test keys). "
                    "Exit status: 0 approved, 2 usage or configuration error, 3 reader error, "
                    "4 terminated or card error, 5 declined.")
    sale.add_argument("amount", help="amount in major units, e.g. 12.50")
    sale.add_argument("--currency", help="ISO 4217 code (EUR, 978); default: the configuration's")
    sale.add_argument("--pin", help="PIN the cardholder types (default: ask on the console, or "
                                    "bypass when there is no console)")
    sale.add_argument("--choose", default="0", metavar="N|AID",
                      help="application the cardholder picks when asked: index in the list "
                           "offered (default 0, the merchant's preferred) or AID prefix")
    sale.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")
    sale.add_argument("--reader", help="reader name (or its beginning)")
    sale.add_argument("--wait", type=float, default=10.0, metavar="SECONDS")
    issuer = sale.add_mutually_exclusive_group()
    issuer.add_argument("--no-host", action="store_true", help="no authorizer: unable to go online")
    issuer.add_argument("--scripted-issuer", action="store_true",
                        help="authorize with the simulator's scripted issuer (simulated cards and "
                             "test keys only), not the [host]")
    sale.add_argument("--issuer-declines", action="store_true",
                      help="the scripted issuer declines verified authorizations")
    sale.add_argument("--refund", action="store_true",
                      help="a refund of the amount to the card (EMV transaction type 20)")
    sale.add_argument("--json", action="store_true", help="print one JSON object")
    sale.set_defaults(func=_sale)

    run = sub.add_parser(
        "run", help="the terminal: the touchscreen, the reader, the host link, the journal, until stopped",
        description="Runs the terminal's services on one event loop until SIGTERM or SIGINT, then stops "
                    "them in order (a sale in progress ends first) and exits 0. Logs go to standard output "
                    "(journald). Under systemd (deploy/tpe.service) it notifies READY, WATCHDOG and "
                    "STOPPING. --script plays the sales of a TOML file instead of the touchscreen (see "
                    "firmware/ui_script.py) and stops after the last one. Exit status: 0 stopped, 2 usage "
                    "or configuration error (file, key, reason), 6 state, journal or host link that "
                    "cannot start.")
    run.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")
    run.add_argument("--script", type=Path, metavar="FILE",
                     help="headless: answer the terminal's questions from this script, print every screen")
    run.add_argument("--screenshots", type=Path, metavar="DIR",
                     help="with --script: draw every screen off screen too and save it there as PNG")
    run.set_defaults(func=_run)

    payments = sub.add_parser("payments", help="the payments this terminal took, with their state")
    payments.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")
    payments.add_argument("--last", type=int, default=0, metavar="N", help="only the last N")
    payments.add_argument("--json", action="store_true", help="print one JSON list")
    payments.set_defaults(func=_payments)

    saf = sub.add_parser("saf", help="the store-and-forward queue").add_subparsers(
        dest="saf_cmd", required=True)
    saf_status = saf.add_parser("status", help="payments and reversals waiting for the host")
    saf_status.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")
    saf_status.add_argument("--json", action="store_true", help="print one JSON object")
    saf_status.set_defaults(func=_saf_status)
    saf_flush = saf.add_parser(
        "flush", help="forward the queue to the acquirer host now",
        description="Settles the payments a power cut left unfinished, then sends the queue in order. "
                    "Exit status: 0 nothing left waiting, 2 usage or configuration error, 6 state or "
                    "host link error, or damaged items set aside, 7 items still waiting (no link, or the "
                    "host did not answer).")
    saf_flush.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")
    saf_flush.add_argument("--window", type=int, default=32, metavar="N",
                           help="messages in flight at once (default 32, at most 64)")
    saf_flush.add_argument("--json", action="store_true", help="print one JSON object")
    saf_flush.set_defaults(func=_saf_flush)

    journal = sub.add_parser("journal", help="the fiscal journal: verify, archive, export, status")
    journal = journal.add_subparsers(dest="journal_cmd", required=True)
    journal_verify = journal.add_parser(
        "verify", help="verify a journal (state folder or database file) or an archive (zip)",
        description="Checks every signature, link and number, the payloads, closures against the totals "
                    "recomputed from the tickets, the heads file (truncation), and an archive's manifest. "
                    "Without --pubkey the key beside the database or inside the archive is used: that "
                    "proves the records intact, not that they come from the device. Exit status: 0 "
                    "intact, 8 broken (every problem listed), 2 usage error.")
    journal_verify.add_argument("path", help="state folder, journal.sqlite3, or an archive's zip file")
    journal_verify.add_argument("--pubkey", metavar="FILE", help="the device's public key (PEM)")
    journal_verify.add_argument("--json", action="store_true", help="print one JSON object")
    journal_verify.set_defaults(func=_journal_verify)
    journal_archive = journal.add_parser(
        "archive", help="write the archive of a month (UTC) and journal it",
        description="Writes a zip holding the month's records of every chain, the public key and a signed "
                    "manifest (docs/journal-format.md, Archives), then journals the act.")
    journal_archive.add_argument("--period", required=True, metavar="YYYY-MM")
    journal_archive.add_argument("--out", type=Path, metavar="DIR",
                                 help="folder of the archive (default: <state>/archives)")
    journal_archive.set_defaults(func=_journal_archive)
    journal_export = journal.add_parser(
        "export", help="the tickets for the accountant (CSV), journalled",
        description="One line per ticket: seq, local date and time, type, amount, currency, one column per "
                    "tender type, the ticket cancelled, the signature extract. UTF-8 with BOM, semicolons.")
    journal_export.add_argument("--format", required=True, choices=("csv",))
    journal_export.add_argument("--period", metavar="YYYY-MM", help="a local month (default: every ticket)")
    journal_export.add_argument("--decimal-comma", action="store_true", help="12,50 instead of 12.50")
    journal_export.add_argument("--out", type=Path, metavar="FILE",
                                help="default: tickets-<period>.csv in the current folder")
    journal_export.set_defaults(func=_journal_export)
    journal_close = journal.add_parser(
        "close", help="close a day, month or fiscal year: totals, perpetual totals, chain heads, signed",
        description="Journals the closure of the tickets since the previous closure of the same kind. "
                    "A period closed twice, or before the last one closed, is refused (exit 2).")
    journal_close.add_argument("kind", choices=("day", "month", "year"))
    journal_close.add_argument("--period", metavar="P",
                               help="YYYY-MM-DD, YYYY-MM or YYYY (default: the current one)")
    journal_close.add_argument("--json", action="store_true", help="print one JSON object")
    journal_close.set_defaults(func=_journal_close)
    journal_status = journal.add_parser("status", help="heads of every chain, key id, heads file check")
    journal_status.add_argument("--json", action="store_true", help="print one JSON object")
    journal_status.set_defaults(func=_journal_status)
    for command in (journal_archive, journal_export, journal_close, journal_status):
        command.add_argument("--config", type=Path, help="terminal configuration (TOML); default: packaged")

    from provisioning import cli as provision_cli
    from provisioning import fleet_cli

    fleet_cli.add_parser(sub)
    provision_cli.add_parser(sub)

    sim = sub.add_parser("sim", help="simulators").add_subparsers(dest="sim_cmd", required=True)
    sim_card = sim.add_parser("card", help="the software EMV card").add_subparsers(
        dest="sim_card_cmd", required=True)
    profiles = sim_card.add_parser("profiles", help="list the card profiles")
    profiles.add_argument("--json", action="store_true")
    profiles.set_defaults(func=_sim_card_profiles)
    serve = sim_card.add_parser(
        "serve", help="serve a card to pcscd's vpcd driver; reads 'insert', 'remove', "
                      "'profile NAME', 'quit' on standard input")
    serve.add_argument("--profile", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=35963, help="vpcd port (default 35963)")
    serve.add_argument("--timing", action="store_true",
                       help="as slow as a real card: 9600 bit/s and per-command processing time")
    serve.add_argument("--removed", action="store_true", help="start with the card out of the reader")
    serve.set_defaults(func=_sim_card_serve)

    sim_host = sim.add_parser(
        "host", help="the simulated acquirer and issuer host (TLS, ISO 8583, test keys)",
        description="Serves terminals under test as acquirer and issuer of the simulated cards. "
                    "Prints 'ok host listening on HOST:PORT' when ready, then reads commands on "
                    "standard input (status, delay, drop, close, garbage, badmac, decline, clear, "
                    "script, block, unblock, balance, quit; see sim/host/serve.py).")
    sim_host.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (port 0: any free)")
    sim_host.add_argument("--pki", type=Path, metavar="DIR",
                          help="test PKI folder, made there when empty (sim/host/test_pki.py)")
    sim_host.add_argument("--ledger", type=Path, metavar="FILE",
                          help="SQLite ledger of what the host books (default: in memory)")
    sim_host.set_defaults(func=_sim_host_serve)
    sim_host_cmd = sim_host.add_subparsers(dest="sim_host_cmd")
    host_ledger = sim_host_cmd.add_parser("ledger", help="print the entries of a host ledger")
    host_ledger.add_argument("--ledger", type=Path, required=True, metavar="FILE")
    host_ledger.add_argument("--json", action="store_true", help="print one JSON array")
    host_ledger.set_defaults(func=_sim_host_ledger)

    sim_broker = sim.add_parser(
        "broker", help="mosquitto for the fleet (TLS, per-device ACL, test PKI)",
        description="Starts mosquitto on 127.0.0.1 with the fleet's TEST PKI made in FOLDER/pki; prints "
                    "'ok broker listening on 127.0.0.1:PORT (pki DIR)' and runs until standard input "
                    "closes, 'quit', or SIGTERM.")
    sim_broker.add_argument("--folder", type=Path, required=True,
                            help="where the PKI and the broker's files go")
    sim_broker.add_argument("--port", type=int, default=0, help="default: a free port")
    sim_broker.set_defaults(func=_sim_broker)

    sim_modem = sim.add_parser(
        "modem", help="a simulated cellular module (Quectel or SIMCom AT dialect) on a pty",
        description="Answers AT commands on a pseudo-terminal like a Quectel EC2x or SIMCom SIM7600 "
                    "module; its data sockets are real TCP connections over a simulated radio. Prints "
                    "'ok modem DIALECT on PATH' when ready, then reads commands on standard input (rtt, "
                    "bandwidth, signal, register, close-sockets, cme N next, slow, garbage, reboot, "
                    "status, quit; see sim/modem/serve.py).")
    sim_modem.add_argument("--dialect", choices=("quectel", "simcom"), default="quectel")
    sim_modem.add_argument("--rtt", type=float, default=0.0, metavar="MS", help="round-trip time (default 0)")
    sim_modem.add_argument("--bandwidth", type=float, metavar="KBIT",
                           help="radio bandwidth each way in kbit/s (default unlimited)")
    sim_modem.add_argument("--signal", type=int, default=-75, metavar="DBM",
                           help="signal level (default -75)")
    sim_modem.add_argument("--pin", help="the SIM asks for this PIN (default: no PIN)")
    sim_modem.add_argument("--register", default="home",
                           choices=("home", "roaming", "denied", "searching", "none"))
    sim_modem.add_argument("--technology", default="4G", choices=("2G", "3G", "4G"))
    sim_modem.add_argument("--open-delay", type=float, default=20.0, metavar="MS",
                           help="the module's own time to open a socket or a context, on top of one RTT")
    sim_modem.add_argument("--attach", type=float, default=0.0, metavar="MS",
                           help="time searching before registering after start or PIN entry")
    sim_modem.add_argument("--apn", help="the network accepts only this APN")
    sim_modem.add_argument("--reboot-seconds", type=float, default=1.0, metavar="S")
    sim_modem.add_argument("--seed", type=int, help="seed of the random garbage and addresses")
    sim_modem.set_defaults(func=_sim_modem)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # pyemv/psec reach TripleDES by its old import path (tests/test_tdes_available.py watches).
    warnings.filterwarnings("ignore", message=".*TripleDES.*")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
