"""Loads the kernel's scenario matrix (tests/scenarios/*.toml) and runs one case."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from emv import card_data
from emv.apdu import Response
from emv.context import TSI, TVR
from emv.kernel_config import ExceptionEntry, FraudRules, KernelConfig, TerminalConfig
from emv.requests import Transmit
from emv.sensitive import pan_token
from firmware.config import AppConfig, load_config
from firmware.prompts import ScriptedPrompt
from firmware.sale import pin_pad_of
from sim.card.card import SimCard
from sim.card.issuer import ScriptedAuthorizer
from sim.card.profile import load_profile
from sim.inprocess import Run, transact

HERE = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True)
class Case:
    name: str
    profile: str
    config: str
    amount: int
    pin: str | None
    pins: tuple[str, ...]
    choose: int | str
    host: str
    put_data: dict[int, bytes]
    pcscd: bool
    expect: dict[str, Any]


def _load(name: str) -> dict[str, Any]:
    with (HERE / name).open("rb") as handle:
        return tomllib.load(handle)


@cache
def cases() -> list[Case]:
    out = []
    for raw in _load("matrix.toml")["case"]:
        out.append(Case(
            name=raw["name"], profile=raw["profile"], config=raw.get("config", "default"),
            amount=raw["amount"], pin=raw.get("pin"), pins=tuple(raw.get("pins", ())),
            choose=raw.get("choose", 0), host=raw.get("host", "approve"),
            put_data={int(tag, 16): bytes.fromhex(value) for tag, value in raw.get("put_data", {}).items()},
            pcscd=raw.get("pcscd", False), expect=raw["expect"]))
    return out


def _converted(target: Any, changes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in changes.items():
        current = getattr(target, key)
        if isinstance(current, bytes):
            value = bytes.fromhex(value)
        elif isinstance(current, frozenset):
            value = frozenset(value)
        elif isinstance(current, tuple):
            value = tuple(bytes.fromhex(v) if key.endswith("aids") else v for v in value)
        out[key] = value
    return out


@cache
def app_config(name: str) -> AppConfig:
    base = load_config()
    spec = _load("configs.toml")[name]
    kernel: KernelConfig = base.kernel
    terminal: TerminalConfig = dataclasses.replace(
        kernel.terminal, **_converted(kernel.terminal, spec.get("terminal", {})))
    aids = tuple(dataclasses.replace(a, **_converted(a, spec.get("aid", {}))) for a in kernel.aids)
    fraud: FraudRules = dataclasses.replace(kernel.fraud, **_converted(kernel.fraud, spec.get("fraud", {})))
    exceptions = tuple(ExceptionEntry(pan_token(pan)) for pan in spec.get("exception_pans", ()))
    kernel = dataclasses.replace(kernel, terminal=terminal, aids=aids, fraud=fraud,
                                 exception_file=kernel.exception_file + exceptions)
    return dataclasses.replace(base, kernel=kernel)


def run_case(case: Case, card: SimCard, fulfil: Callable[[Transmit], Response] | None = None,
             ) -> tuple[Run, ScriptedPrompt]:
    config = app_config(case.config)
    prompt = ScriptedPrompt(pin=case.pin, pins=list(case.pins), pin_pad=pin_pad_of(config),
                            choice=case.choose)
    authorizer = None if case.host == "none" else ScriptedAuthorizer(
        profiles=[case.profile], decline=case.host == "decline", put_data=case.put_data)
    return transact(card, config.kernel, case.amount, prompt=prompt, authorizer=authorizer,
                    fulfil=fulfil), prompt


def expected_commands(case: Case, aid: str | None) -> list[str]:
    """Expand "READ RECORD x2" and "xAFL" (the selected application's AFL record count)."""
    records = 0
    if aid is not None:
        app = next(a for a in load_profile(case.profile).applications if a.aid.hex().upper() == aid)
        records = sum(e.last - e.first + 1 for e in card_data.parse_afl(app.image.afl))
    out: list[str] = []
    for item in (part.strip() for part in case.expect["commands"].split(",")):
        name, _, count = item.partition(" x")
        repeat = records if count == "AFL" else int(count) if count else 1
        out += [name] * repeat
    return out


def bit_names(value: bytes, names: type) -> list[str]:
    return sorted(key for key, bit in vars(names).items()
                  if key.isupper() and isinstance(bit, tuple) and value[bit[0]] & bit[1])


def check(case: Case, run: Run, prompt: ScriptedPrompt) -> None:
    o, e = run.outcome, case.expect
    got: dict[str, Any] = {"outcome": o.kind.value}
    want: dict[str, Any] = {"outcome": e["outcome"]}
    simple = {"reason": o.reason, "aid": o.aid.hex().upper() if o.aid else None,
              "first_ac": o.first_cryptogram_type, "final_ac": o.cryptogram_type, "oda": o.oda,
              "cvm_results": o.cvm_results.hex().upper(),
              "response_code": o.response_code.decode() if o.response_code else None,
              "issuer_authentication": o.issuer_authentication,
              "script_results": o.script_results.hex().upper(), "signature_required": o.signature_required,
              "language": o.language, "prompts": prompt.asked,
              "offered": [list(aids) for aids in prompt.offered]}
    for key, value in simple.items():
        if key in e or (key == "reason" and o.reason is not None):
            got[key], want[key] = value, e.get(key)
    if "tvr" in e:
        got["tvr"], want["tvr"] = bit_names(o.tvr, TVR), sorted(e["tvr"])
    if "tsi" in e:
        got["tsi"], want["tsi"] = bit_names(o.tsi, TSI), sorted(e["tsi"])
    if "commands" in e:
        got["commands"] = run.commands
        want["commands"] = expected_commands(case, o.aid.hex().upper() if o.aid else None)
    assert got == want, f"got {got}\nwant {want}\nevents:\n" + "\n".join(o.events)
