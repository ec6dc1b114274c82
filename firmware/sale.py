"""`tpe sale`: the technician's headless test transaction on the configured reader.

The authorization goes to the configured acquirer host (`firmware.host_client`), or, when asked,
to the scripted issuer of the simulator (`sim.card.issuer`), and every output says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from emv import kernel
from emv.apdu import Response
from emv.context import Transaction
from emv.outcome import Outcome
from emv.requests import Transmit
from firmware import driver
from firmware.config import AppConfig
from firmware.host_client import AuthorizationReport, BlockingAuthorizer, EventLoopThread, HostClient
from firmware.host_store import HostStore
from firmware.messages import Acceptor
from firmware.money import alpha, format_amount
from firmware.pin_pad import DukptPinPad, PinPad
from firmware.prompts import ConsolePrompt, ScriptedPrompt
from firmware.terminal_keys import MemorySecretStore, TerminalKeys

log = logging.getLogger(__name__)


STATE_FILE = "host.sqlite3"  # in the [state] folder


@dataclass
class SaleResult:
    outcome: Outcome
    apdus: int
    authorizer: str | None
    asked: list[str]
    host: AuthorizationReport | None = None  # what the acquirer link did, when it was used


def counting(fulfil: Callable[[Transmit], Response]) -> tuple[Callable[[Transmit], Response], list[int]]:
    """Wraps a `Transmit` handler to count the commands the kernel sent."""
    count = [0]

    def send(request: Transmit) -> Response:
        count[0] += 1
        return fulfil(request)

    return send, count


def terminal_keys_of(config: AppConfig, store: HostStore) -> TerminalKeys | None:
    """The terminal's DUKPT keys kept in `store`; None without a [dukpt] section."""
    if config.dukpt is None:
        return None
    return TerminalKeys.open(store, config.dukpt.initial_key_file)


def pin_pad_of(config: AppConfig, keys: TerminalKeys | None = None) -> PinPad | None:
    """The PIN pad over the terminal's DUKPT `keys`; None without a [dukpt] section.

    Without `keys`, the registers live in memory and start again from the initial key at every
    call, repeating KSNs: for in-process tests and the bench only. A terminal talking to a host
    passes the `TerminalKeys` of its state database."""
    if keys is None:
        if config.dukpt is None:
            return None
        keys = TerminalKeys.open(MemorySecretStore(), config.dukpt.initial_key_file)
    return DukptPinPad(keys)


def state_store(config: AppConfig) -> HostStore:
    """The durable state of the host link (STAN, DUKPT registers, reversals owed)."""
    return HostStore(config.state.folder / STATE_FILE)


def acceptor_of(config: AppConfig) -> Acceptor:
    """Fields 41, 42 and 32: the terminal and merchant of [terminal], the acquirer of [host]."""
    if config.host is None:
        raise ValueError("no [host] section")
    terminal = config.kernel.terminal
    return Acceptor(terminal_id=terminal.terminal_id, merchant_id=terminal.merchant_id,
                    acquirer_id=config.host.acquirer_id)


@contextlib.contextmanager
def acquirer(config: AppConfig, store: HostStore, keys: TerminalKeys) -> Iterator[BlockingAuthorizer]:
    """The configured acquirer host as the kernel's authorizer, its client on an event loop
    thread; the connection is closed and the thread stopped on the way out."""
    if config.host is None:
        raise ValueError("no [host] section")
    thread = EventLoopThread()
    try:
        client = HostClient(config.host, store, keys, acceptor_of(config))
        try:
            yield BlockingAuthorizer(client, thread.loop)
        finally:
            thread.run(client.close())
    finally:
        thread.stop()


def run_sale(config: AppConfig, amount: int, fulfil: Callable[[Transmit], Response], *,
             pin: str | None, choice: int | str = 0, authorizer: Any = None,
             pin_pad: PinPad | None = None, interactive: bool = False,
             when: datetime.datetime | None = None, rng: Callable[[int], bytes] = os.urandom) -> SaleResult:
    """One sale through the kernel; `authorizer` None means no host (unable to go online),
    `pin_pad` None no online PIN. With the acquirer host, an approval the card then declines is
    reversed before this returns."""
    prompt: Any = ConsolePrompt(pin_pad=pin_pad) if interactive else ScriptedPrompt(
        pin=pin, pin_pad=pin_pad, choice=choice)
    send, count = counting(fulfil)
    txn = Transaction(amount=amount, when=when or datetime.datetime.now())
    outcome = driver.run(kernel.transaction(config.kernel, txn, rng=rng), send, prompt, authorizer)
    for event in outcome.events:  # kernel decisions: no card data (emv.context.Context.note)
        log.info("kernel: %s", event)
    log.info("sale: %s%s, %s APDUs, TVR %s, TSI %s", outcome.kind.value,
             f" ({outcome.reason})" if outcome.reason else "", count[0], outcome.tvr.hex().upper(),
             outcome.tsi.hex().upper())
    host = None
    if isinstance(authorizer, BlockingAuthorizer):
        authorizer.complete(outcome)
        host = authorizer.client.last
    label = getattr(authorizer, "label", None) if authorizer is not None else None
    return SaleResult(outcome, count[0], label, list(getattr(prompt, "asked", [])), host)


def with_currency(config: AppConfig, number: int, exponent: int) -> AppConfig:
    terminal = dataclasses.replace(config.kernel.terminal, currency=number, currency_exponent=exponent)
    return dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, terminal=terminal))


def host_summary(report: AuthorizationReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


def as_json(result: SaleResult) -> dict[str, Any]:
    out = result.outcome.summary()
    out["apdus"] = result.apdus
    out["authorizer"] = result.authorizer or "none (unable to go online)"
    out["prompts"] = result.asked
    if result.host is not None:
        out["host"] = host_summary(result.host)
    return out


def _host_rows(report: AuthorizationReport | None) -> list[tuple[str, Any]]:
    if report is None:
        return []
    rows: list[tuple[str, Any]] = [
        ("STAN", None if report.stan is None else f"{report.stan:06d}"),
        ("Host answer", report.response_code),
        ("Host link", report.problem),
    ]
    for reversal in report.reversals:
        state = (f"acknowledged ({reversal.response_code})" if reversal.acknowledged
                 else f"still owed: {reversal.problem}")
        rows.append(("Reversal", f"{reversal.mti} of STAN {reversal.original_stan} "
                                 f"(reason {reversal.reason}): {state}"))
    return rows


def as_text(result: SaleResult) -> str:
    o = result.outcome
    lines = [f"Authorizer  {result.authorizer or 'none: sale completed as unable to go online'}",
             f"Outcome     {o.kind.value.upper().replace('_', ' ')}" + (f" ({o.reason})" if o.reason else ""),
             f"Amount      {format_amount(o.amount, o.exponent)} {alpha(o.currency)}"]
    rows = [
        ("Application", f"{o.label or ''} {o.aid.hex().upper() if o.aid else ''}".strip() or None),
        ("PAN", o.pan_masked),
        ("PAN seq.", o.pan_sequence_number),
        ("Cryptogram", f"{o.first_cryptogram_type} -> {o.cryptogram_type}" if o.first_cryptogram_type
         and o.first_cryptogram_type != o.cryptogram_type else o.cryptogram_type),
        ("ATC", o.atc.hex().upper() if o.atc else None),
        ("ODA", o.oda),
        ("CVM", o.cvm),
        ("Signature", "required on the receipt" if o.signature_required else None),
        ("TVR", o.tvr.hex().upper()),
        ("TSI", o.tsi.hex().upper()),
        ("CVM results", o.cvm_results.hex().upper()),
        ("Response", o.response_code.decode("ascii", "replace") if o.response_code else None),
        ("Auth. code", o.authorization_code.decode("ascii", "replace") if o.authorization_code else None),
        ("RRN", o.host_reference),
        ("Issuer auth", o.issuer_authentication),
        ("Scripts", o.script_results.hex().upper() or None),
        ("Language", ", ".join(o.language) or None),
        *_host_rows(result.host),
        ("APDUs", result.apdus),
    ]
    lines += [f"{key:11} {value}" for key, value in rows if value is not None]
    return "\n".join(lines)


def interactive_console() -> bool:
    return sys.stdin.isatty()
