"""A scripted issuer for `tpe sale` until the acquirer link exists: NOT a real acquirer.

It knows the simulated cards' issuer master keys (TEST KEYS, from the profiles), recomputes the
ARQC from field 55 (EMV 4.4 Book 2, 8.1), approves when it matches and answers with a correct
ARPC (Book 2, 8.2); an ARQC that does not verify is declined ('05'), a card it does not know
gets no answer (unable to go online). Optional issuer scripts make the completion path testable.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from emv import apdu, tlv
from emv.errors import EmvError
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from sim.card.crypto import CardCrypto
from sim.card.profile import Application, load_profile, profile_names

log = logging.getLogger(__name__)

LABEL = "SCRIPTED AUTHORIZER (simulated issuer, test keys) - not a real acquirer"

APPROVED = b"00"
DECLINED = b"05"  # ISO 8583 field 39: do not honour

# The data the ARQC covers, with their lengths (EMV 4.4 Book 3, Annex A); any other length is
# a format error, never handed to the key derivation.
_FIELD_55_LENGTHS: dict[int, range] = {
    0x9F26: range(8, 9), 0x9F36: range(2, 3), 0x9F10: range(1, 33), 0x82: range(2, 3),
    0x9F02: range(6, 7), 0x9F03: range(6, 7), 0x9F1A: range(2, 3), 0x95: range(5, 6),
    0x5F2A: range(2, 3), 0x9A: range(3, 4), 0x9C: range(1, 2), 0x9F37: range(4, 5),
}


@dataclass
class ScriptedAuthorizer:
    """Answers authorizations for the applications of the given simulator profiles."""

    profiles: Iterable[str] | None = None
    decline: bool = False  # the issuer declines every verified ARQC
    # Issuer script '72' sent with an approval (Book 3, 10.10): PUT DATA of these tags, then
    # APPLICATION BLOCK when `block`; each command MACed with the card's session key (Book 2, 9.2).
    put_data: dict[int, bytes] = field(default_factory=dict)
    block: bool = False
    script_id: bytes = bytes.fromhex("00000001")
    seen: list[OnlineRequest] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABEL

    def __post_init__(self) -> None:
        names = list(self.profiles) if self.profiles is not None else profile_names()
        self._apps: list[Application] = [app for name in names for app in load_profile(name).applications]
        self._counter = 0

    def _application(self, request: OnlineRequest) -> Application | None:
        pan = request.pan.reveal()
        psn = request.pan_sequence_number
        for app in self._apps:
            if app.aid == request.aid and app.pan == pan and (psn is None or int(app.psn) == psn):
                return app
        return None

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.seen.append(request)
        app = self._application(request)
        if app is None:
            log.info("scripted authorizer: card unknown to the simulated issuer")
            return OnlineResponse(HostStatus.UNABLE)
        try:
            data = dict(tlv.primitives(tlv.decode(request.chip_data)))
        except EmvError:
            return OnlineResponse(HostStatus.RESPONDED, approved=False, response_code=b"30")  # format error
        crypto = CardCrypto(app)
        if any(len(data.get(tag, b"")) not in lengths for tag, lengths in _FIELD_55_LENGTHS.items()):
            return OnlineResponse(HostStatus.RESPONDED, approved=False, response_code=b"30")
        arqc, atc = data[0x9F26], data[0x9F36]
        expected = crypto.application_cryptogram(data, data[0x82], atc, data[0x9F10])
        verified = expected == arqc
        approved = verified and not self.decline
        arc = APPROVED if approved else DECLINED
        self._counter += 1
        return OnlineResponse(
            HostStatus.RESPONDED,
            approved=approved,
            response_code=arc,
            issuer_authentication_data=crypto.issuer_authentication_data(arqc, atc, arc, approved=approved)
            if verified else None,
            scripts=self._script(crypto, arqc, atc) if approved else b"",
            authorization_code=f"SIM{self._counter:03d}".encode() if approved else None,
            host_reference=f"SIMULATED{self._counter:03d}",
            extra={"authorizer": LABEL, "arqc": "verified" if verified else "wrong"},
        )

    def _script(self, crypto: CardCrypto, arqc: bytes, atc: bytes) -> bytes:
        placeholder = bytes(8)
        commands = [apdu.put_data(tag, value, placeholder) for tag, value in self.put_data.items()]
        if self.block:
            commands.append(apdu.application_block(placeholder))
        if not commands:
            return b""
        encoded = []
        for sequence, command in enumerate(commands):
            body = command.data[:-len(placeholder)] if command.data else b""
            mac = crypto.script_mac(command.encode()[:5], body, arqc=arqc, atc=atc, sequence=sequence)
            signed = dataclasses.replace(command, data=body + mac)
            encoded.append(tlv.encode(0x86, signed.encode()))
        return tlv.encode(0x72, tlv.encode(0x9F18, self.script_id) + b"".join(encoded))
