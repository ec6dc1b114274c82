"""`tpe sale`: the technician's headless test transaction on the configured reader.

Until the acquirer link exists the authorization goes to the scripted issuer of the simulator
(`sim.card.issuer`), and every output says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emv import kernel
from emv.apdu import Response
from emv.context import Transaction
from emv.outcome import Outcome
from emv.requests import Transmit
from firmware import driver
from firmware.config import AppConfig, load_pin_pad_key
from firmware.money import alpha, format_amount
from firmware.pin_pad import PinPad
from firmware.prompts import ConsolePrompt, ScriptedPrompt

log = logging.getLogger(__name__)


@dataclass
class SaleResult:
    outcome: Outcome
    apdus: int
    authorizer: str | None
    asked: list[str]


def counting(fulfil: Callable[[Transmit], Response]) -> tuple[Callable[[Transmit], Response], list[int]]:
    """Wraps a `Transmit` handler to count the commands the kernel sent."""
    count = [0]

    def send(request: Transmit) -> Response:
        count[0] += 1
        return fulfil(request)

    return send, count


def pin_pad_of(config: AppConfig) -> PinPad | None:
    if config.pin_pad.key_file is None:
        return None
    return PinPad(load_pin_pad_key(config.pin_pad.key_file))


def run_sale(config: AppConfig, amount: int, fulfil: Callable[[Transmit], Response], *,
             pin: str | None, choice: int | str = 0, authorizer: Any = None,
             interactive: bool = False, when: datetime.datetime | None = None,
             rng: Callable[[int], bytes] = os.urandom) -> SaleResult:
    """One sale through the kernel; `authorizer` None means no host (unable to go online)."""
    pad = pin_pad_of(config)
    prompt: Any = ConsolePrompt(pin_pad=pad) if interactive else ScriptedPrompt(
        pin=pin, pin_pad=pad, choice=choice)
    send, count = counting(fulfil)
    txn = Transaction(amount=amount, when=when or datetime.datetime.now())
    outcome = driver.run(kernel.transaction(config.kernel, txn, rng=rng), send, prompt, authorizer)
    for event in outcome.events:  # kernel decisions: no card data (emv.context.Context.note)
        log.info("kernel: %s", event)
    log.info("sale: %s%s, %s APDUs, TVR %s, TSI %s", outcome.kind.value,
             f" ({outcome.reason})" if outcome.reason else "", count[0], outcome.tvr.hex().upper(),
             outcome.tsi.hex().upper())
    label = getattr(authorizer, "label", None) if authorizer is not None else None
    return SaleResult(outcome, count[0], label, list(getattr(prompt, "asked", [])))


def with_currency(config: AppConfig, number: int, exponent: int) -> AppConfig:
    terminal = dataclasses.replace(config.kernel.terminal, currency=number, currency_exponent=exponent)
    return dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, terminal=terminal))


def as_json(result: SaleResult) -> dict[str, Any]:
    out = result.outcome.summary()
    out["apdus"] = result.apdus
    out["authorizer"] = result.authorizer or "none (unable to go online)"
    out["prompts"] = result.asked
    return out


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
        ("Issuer auth", o.issuer_authentication),
        ("Scripts", o.script_results.hex().upper() or None),
        ("Language", ", ".join(o.language) or None),
        ("APDUs", result.apdus),
    ]
    lines += [f"{key:11} {value}" for key, value in rows if value is not None]
    return "\n".join(lines)


def interactive_console() -> bool:
    return sys.stdin.isatty()
