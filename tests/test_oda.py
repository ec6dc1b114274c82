"""Offline data authentication (EMV 4.4 Book 3, 10.3; Book 2, 5 and 6) against the simulated card.

The simulated card's CA keys (`sim/card/ca_keys.toml`) are TEST KEYS.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from emv import apdu, card_data, dol, oda, tlv
from emv.apdu import Response
from emv.capk import load_capks
from emv.context import Context, Transaction
from emv.kernel_config import AidParams, KernelConfig, TerminalConfig
from emv.requests import Transmit
from firmware.driver import card_sender
from sim.card.card import SimCard
from sim.card.profile import load_profile

WHEN = datetime.datetime(2026, 11, 26, 12, 0)
UN = bytes.fromhex("1A2B3C4D")
CA_KEYS = load_capks((Path(__file__).parents[1] / "sim" / "card" / "ca_keys.toml").read_text())


def make_card(name: str) -> SimCard:
    return SimCard(load_profile(name), rng=random.Random(1), today=lambda: WHEN.date())


def make_context(*, capabilities: bytes = bytes.fromhex("E0F8C8"), **config: Any) -> Context:
    kernel = KernelConfig(terminal=TerminalConfig(capabilities=capabilities), ca_keys=CA_KEYS, **config)
    ctx = Context(config=kernel, transaction=Transaction(amount=1234, when=WHEN),
                  rng=lambda n: bytes(range(n)))
    ctx.unpredictable_number = UN
    return ctx


def drive(gen: Generator[Transmit, Response, Any], send: Callable[[Transmit], Response]) -> Any:
    """Run a kernel generator, answering every `Transmit` with `send`."""
    try:
        request = next(gen)
        while True:
            assert isinstance(request, Transmit)
            request = gen.send(send(request))
    except StopIteration as stop:
        return stop.value


def read_application(ctx: Context, send: Callable[[Transmit], Response], card: SimCard) -> None:
    """SELECT, GET PROCESSING OPTIONS and READ RECORD as Book 3, 10.1-10.2 and 10.3 ask; collects
    the static data to authenticate the way Book 3, 10.3 describes it."""
    app = card.profile.applications[0]
    ctx.aid_params = AidParams(aid=app.aid)
    fci = send(Transmit(apdu.select(app.aid)))
    assert fci.ok
    (template,) = tlv.decode(fci.data)
    for tag, value in tlv.primitives([template]):
        ctx.card.setdefault(tag, value)
    pdol = ctx.card.get(0x9F38, b"")
    ctx.pdol_data = dol.build(pdol, ctx.dol_data())
    gpo = send(Transmit(apdu.get_processing_options(ctx.pdol_data)))
    assert gpo.ok
    (answer,) = tlv.decode(gpo.data)
    if answer.tag == 0x80:
        aip, afl = answer.value[:2], answer.value[2:]
    else:
        aip, afl = answer.find(0x82).value, answer.find(0x94).value  # type: ignore[union-attr]
    ctx.card[0x82], ctx.card[0x94] = aip, afl
    ctx.aip = card_data.decode_aip(aip)
    ctx.afl = card_data.parse_afl(afl)
    for entry in ctx.afl:
        for number in range(entry.first, entry.last + 1):
            record = send(Transmit(apdu.read_record(number, entry.sfi)))
            assert record.ok
            (body,) = tlv.decode(record.data)
            assert body.tag == 0x70
            for tag, value in tlv.primitives([body]):
                ctx.card[tag] = value
            if number < entry.first + entry.oda_count:
                ctx.oda_data += body.value if entry.sfi <= 10 else record.data
    if ctx.card.get(0x9F4A) == b"\x82":
        ctx.oda_data += aip


def ready(name: str, **config: Any) -> tuple[Context, Callable[[Transmit], Response], SimCard]:
    card = make_card(name)
    card.power_on()
    send = card_sender(card.process, card.protocol)
    ctx = make_context(**config)
    read_application(ctx, send, card)
    return ctx, send, card


# -- issuer public key -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "dda_offline_pin", "sda_only"])
def test_issuer_public_key_recovered_and_cached(name: str) -> None:
    ctx, _send, _card = ready(name)
    key = oda.issuer_public_key(ctx)
    assert key is not None
    assert ctx.issuer_key is key
    assert oda.issuer_public_key(ctx) is key
    assert ctx.tvr.value == bytes(5) and ctx.tsi.value == bytes(2)


def test_issuer_public_key_unknown_ca_index_leaves_tvr_alone() -> None:
    ctx, _send, _card = ready("visa_cda_online")
    ctx.card[0x8F] = b"\x01"
    assert oda.issuer_public_key(ctx) is None
    assert ctx.issuer_key is None
    assert ctx.tvr.value == bytes(5) and ctx.tsi.value == bytes(2)


def test_issuer_public_key_expired_ca_key() -> None:
    ctx, _send, _card = ready("visa_cda_online")
    keys = {k: dataclasses.replace(v, expiry=datetime.date(2026, 11, 25)) for k, v in CA_KEYS.items()}
    ctx = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, ca_keys=keys))
    assert oda.issuer_public_key(ctx) is None
    assert ctx.tvr.value == bytes(5)
