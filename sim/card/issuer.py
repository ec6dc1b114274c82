"""The simulated cards' issuer: ARQC check, ARPC and issuer scripts from the profiles' TEST KEYS.

`SimulatedIssuer` knows the issuer master keys of the simulated cards (TEST KEYS, from the
profiles), recomputes the ARQC from field 55 (EMV 4.4 Book 2, 8.1), and signs its answer: the
Issuer Authentication Data '91' (Book 2, 8.2) and issuer scripts MACed with the card's session
key (Book 2, 9.2). The host simulator (`sim.host`) and `ScriptedAuthorizer` share it.

`ScriptedAuthorizer` is a scripted issuer for `tpe sale` until the acquirer link is in use: NOT
a real acquirer. It approves an ARQC that verifies and answers with a correct ARPC; an ARQC
that does not verify is declined ('05'), a card it does not know gets no answer (unable to go
online). Optional issuer scripts make the completion path testable.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from emv import apdu, tlv
from emv.errors import EmvError
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from sim.card.crypto import CardCrypto
from sim.card.profile import Application, load_profile, profile_names

log = logging.getLogger(__name__)

LABEL = "SCRIPTED AUTHORIZER (simulated issuer, test keys) - not a real acquirer"

APPROVED = b"00"
DECLINED = b"05"  # ISO 8583 field 39: do not honour
FORMAT_ERROR = b"30"

SCRIPT_TEMPLATES = (0x71, 0x72)  # EMV 4.4 Book 3, 10.10: before / after the final GENERATE AC
_SCRIPT_ID_LENGTH = 4  # Book 3, Annex A, '9F18'

# The data the ARQC covers, with their lengths (EMV 4.4 Book 3, Annex A); any other length is
# a format error, never handed to the key derivation.
_FIELD_55_LENGTHS: dict[int, range] = {
    0x9F26: range(8, 9), 0x9F36: range(2, 3), 0x9F10: range(1, 33), 0x82: range(2, 3),
    0x9F02: range(6, 7), 0x9F03: range(6, 7), 0x9F1A: range(2, 3), 0x95: range(5, 6),
    0x5F2A: range(2, 3), 0x9A: range(3, 4), 0x9C: range(1, 2), 0x9F37: range(4, 5),
}


@dataclass(frozen=True)
class IssuedCard:
    """One application of one simulated card, as its issuer knows it (TEST KEYS, PIN)."""

    profile: str
    app: Application
    pin: str = field(repr=False)

    @cached_property
    def crypto(self) -> CardCrypto:
        return CardCrypto(self.app)


class ArqcStatus(StrEnum):
    VERIFIED = "verified"
    WRONG = "wrong"  # well-formed data, but the cryptogram is not the card's
    FORMAT = "format"  # field 55 unreadable, or data the ARQC covers missing or of a wrong length


@dataclass(frozen=True)
class IssuerScripts:
    """Issuer script commands to send with an approval (EMV 4.4 Book 3, 10.10): PUT DATA of these
    tags, then APPLICATION BLOCK when `block`, in template '71' or '72'."""

    put_data: Mapping[int, bytes] = field(default_factory=dict)
    block: bool = False
    template: int = 0x72
    script_id: bytes = bytes.fromhex("00000001")

    def __post_init__(self) -> None:
        if self.template not in SCRIPT_TEMPLATES:
            raise ValueError("an issuer script template is '71' or '72'")
        if len(self.script_id) != _SCRIPT_ID_LENGTH:
            raise ValueError("an issuer script identifier is 4 bytes")

    @property
    def empty(self) -> bool:
        return not self.put_data and not self.block


@dataclass(frozen=True)
class ArqcCheck:
    """What the issuer concluded from field 55, and what it needs to sign its answer."""

    status: ArqcStatus
    card: IssuedCard | None = None
    arqc: bytes = b""
    atc: bytes = b""
    data: Mapping[int, bytes] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.status is ArqcStatus.VERIFIED

    def issuer_authentication_data(self, arc: bytes, *, approved: bool) -> bytes:
        """'91' for a verified ARQC (Book 2, 8.2): the ARPC over the ARQC and `arc` (method 1),
        or the CSU saying whether the issuer approves (method 2)."""
        if self.card is None or not self.verified:
            raise ValueError("only a verified ARQC gets an ARPC")
        return self.card.crypto.issuer_authentication_data(self.arqc, self.atc, arc, approved=approved)

    def script(self, scripts: IssuerScripts) -> bytes:
        """The template of `scripts`, each command MACed with the card's session key (Book 2,
        9.2); b"" when there is nothing to send."""
        if self.card is None or not self.verified:
            raise ValueError("only a verified ARQC gets issuer scripts")
        placeholder = bytes(8)
        commands = [apdu.put_data(tag, value, placeholder) for tag, value in scripts.put_data.items()]
        if scripts.block:
            commands.append(apdu.application_block(placeholder))
        if not commands:
            return b""
        encoded = []
        for sequence, command in enumerate(commands):
            body = command.data[:-len(placeholder)] if command.data else b""
            mac = self.card.crypto.script_mac(command.encode()[:5], body, arqc=self.arqc, atc=self.atc,
                                              sequence=sequence)
            signed = dataclasses.replace(command, data=body + mac)
            encoded.append(tlv.encode(0x86, signed.encode()))
        return tlv.encode(scripts.template, tlv.encode(0x9F18, scripts.script_id) + b"".join(encoded))


class SimulatedIssuer:
    """The issuer of the applications of the given simulator profiles (all by default)."""

    def __init__(self, profiles: Iterable[str] | None = None) -> None:
        names = list(profiles) if profiles is not None else profile_names()
        cards: list[IssuedCard] = []
        for name in names:
            profile = load_profile(name)
            cards += [IssuedCard(name, app, profile.pin) for app in profile.applications]
        self.cards: tuple[IssuedCard, ...] = tuple(cards)

    def __repr__(self) -> str:
        return f"SimulatedIssuer({len(self.cards)} applications, TEST KEYS hidden)"

    def find(self, pan: str, psn: int | None, aid: bytes | None) -> list[IssuedCard]:
        """The applications with this PAN, PAN sequence number (any when None) and AID (any when
        None), in profile order."""
        return [card for card in self.cards
                if card.app.pan == pan and (psn is None or int(card.app.psn) == psn)
                and (aid is None or card.app.aid == aid)]

    def check(self, cards: Iterable[IssuedCard], chip_data: bytes) -> ArqcCheck:
        """Recompute the ARQC of field 55 with each candidate's keys (Book 2, 8.1): the first
        that matches is VERIFIED; none WRONG; unreadable data FORMAT."""
        try:
            data = dict(tlv.primitives(tlv.decode(chip_data)))
        except EmvError:
            return ArqcCheck(ArqcStatus.FORMAT)
        if any(len(data.get(tag, b"")) not in lengths for tag, lengths in _FIELD_55_LENGTHS.items()):
            return ArqcCheck(ArqcStatus.FORMAT)
        arqc, atc = data[0x9F26], data[0x9F36]
        first: IssuedCard | None = None
        for card in cards:
            first = first or card
            try:
                expected = card.crypto.application_cryptogram(data, data[0x82], atc, data[0x9F10])
            except (ValueError, TypeError):  # an IAD the CVN cannot use
                return ArqcCheck(ArqcStatus.FORMAT, card, arqc, atc, data)
            if expected == arqc:
                return ArqcCheck(ArqcStatus.VERIFIED, card, arqc, atc, data)
        return ArqcCheck(ArqcStatus.WRONG, first, arqc, atc, data)


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
        self._issuer = SimulatedIssuer(self.profiles)
        self._counter = 0

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.seen.append(request)
        cards = self._issuer.find(request.pan.reveal(), request.pan_sequence_number, request.aid)[:1]
        if not cards:
            log.info("scripted authorizer: card unknown to the simulated issuer")
            return OnlineResponse(HostStatus.UNABLE)
        check = self._issuer.check(cards, request.chip_data)
        if check.status is ArqcStatus.FORMAT:
            return OnlineResponse(HostStatus.RESPONDED, approved=False, response_code=FORMAT_ERROR)
        verified = check.verified
        approved = verified and not self.decline
        arc = APPROVED if approved else DECLINED
        self._counter += 1
        scripts = IssuerScripts(put_data=self.put_data, block=self.block, script_id=self.script_id)
        return OnlineResponse(
            HostStatus.RESPONDED,
            approved=approved,
            response_code=arc,
            issuer_authentication_data=check.issuer_authentication_data(arc, approved=approved)
            if verified else None,
            scripts=check.script(scripts) if approved else b"",
            authorization_code=f"SIM{self._counter:03d}".encode() if approved else None,
            host_reference=f"SIMULATED{self._counter:03d}",
            extra={"authorizer": LABEL, "arqc": "verified" if verified else "wrong"},
        )
