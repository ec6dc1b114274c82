"""What the host simulator does with one request frame: check its MAC, decide, book, answer.

No network here (ARCHITECTURE principle 1): a frame in, a MACed answer (or nothing, when no
answer can be built) out, with the ledger as the only side effect. `sim.host.server` carries
frames over TLS and applies the response faults.

The rules, docs/host-protocol.md being the reference of the messages:

- Every request's MAC is checked first, under the AES DUKPT key of the KSN in field 53, usage
  2000 (ANSI X9.24-3-2017, 6.3.3); the answer is MACed under usage 2001 of the same KSN. A
  request whose MAC does not verify is never processed: it is answered '63' (ISO 8583:1987
  "security violation"). A request that cannot be parsed is answered '30' (format error) when
  its MTI, the fields its answer must echo and field 53 can be read; otherwise there is no
  answer and the server closes the connection.
- Repeats are idempotent: a request whose terminal (41), MTI (0221 counting as 0220, 0401 as
  0400), STAN (11) and transmission time (7) the host has answered before, with the same fields
  (but 53 and the MAC, which a repeat renews), gets the same answer again and books nothing.
  Another request under the same terminal, MTI, STAN and field 7, or a 0100/0200/0220 reusing
  the STAN of another card transaction of the terminal's open batch, is answered '94'
  (duplicate transmission) and not booked.
- Authorizations follow `sim.host.accounts`; the answer carries '91' (ARPC) when the ARQC
  verified, and the armed issuer scripts on approval.
- Reversals of an unknown transaction are acknowledged '00' with nothing booked; of a
  transaction already reversed by another 0400, '94'.
- An offline approval's advice (0220 with field 55) is booked '00', or refused '62' (booked as
  declined) when the card's account is blocked: a decline after the fact.
- A completion (0220 with field 56) of an unknown, declined or reversed 0100 is answered '12';
  a second completion of the same 0100, '94'.
- Reconciliation compares the terminal's totals with the approved, unreversed 0200s and 0220s of
  its open batch: '00' in balance, '95' not; either way the batch closes under the 0500's batch
  number (a 0500 for a batch already closed is compared with that batch again).
- Network management: sign-on ('001') and echo ('301') are answered '00', any other code '30'.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import iso8583
from psec import pinblock

from emv import tlv
from emv.errors import EmvError
from emv.sensitive import pan_token
from firmware import messages
from firmware.dukpt import DukptError, format_ksn
from firmware.iso8583_spec import MAC_LENGTH, MANDATORY, PRESENCE, RESPONSE_OF, SPEC
from firmware.messages import Fields, MacError, MessageError, Mti
from sim.card.issuer import ArqcStatus, IssuedCard, IssuerScripts, SimulatedIssuer
from sim.host.accounts import Accounts, Code, masked
from sim.host.faults import Faults
from sim.host.keys import HostKeys, RequestKeys
from sim.host.ledger import DEBIT_TYPES, Entry, Ledger, NewEntry

log = logging.getLogger(__name__)

_REPEAT_OF = {Mti.ADVICE_REPEAT.value: Mti.ADVICE.value, Mti.REVERSAL_REPEAT.value: Mti.REVERSAL.value}
_CARD_MTIS = (Mti.AUTHORIZATION.value, Mti.FINANCIAL.value, Mti.ADVICE.value)
_HOST_FIELDS = frozenset({"37", "38", "39", "55", "64", "128"})
_RID_LENGTH = 5
_TAG_DF_NAME = 0x84
_TAG_AID_TERMINAL = 0x9F06
_TAG_AMOUNT = 0x9F02
_TAG_IAD = 0x91


@dataclass(frozen=True)
class Answer:
    """The outcome of one frame: the MACed answer to send (None: close the connection), and a
    log line with no card data."""

    data: bytes | None
    summary: str
    booked: bool = False


def _lenient(frame: bytes) -> dict[str, str] | None:
    """The fields pyiso8583 can read from a frame our rules refuse, or None."""
    try:
        decoded, _ = iso8583.decode(bytes(frame), SPEC)
    except (iso8583.DecodeError, KeyError, ValueError, TypeError):
        return None
    return {key: value for key, value in decoded.items() if key not in ("p", "1") and isinstance(value, str)}


def error_response(request: Mapping[str, str], code: str) -> Fields | None:
    """The answer to `request` with field 39 `code`, echoing what docs/host-protocol.md lets the
    answer echo; only the mandatory echoes when others are unusable; None when the answer's
    MTI is not one of the protocol's or a mandatory echo is missing or malformed."""
    answer_mti = RESPONSE_OF.get(str(request.get("t")))
    if answer_mti is None:
        return None
    allowed = PRESENCE[answer_mti]
    echo = {key: value for key, value in request.items()
            if key in allowed and key not in _HOST_FIELDS and isinstance(value, str)}
    mandatory = {key: value for key, value in echo.items() if allowed[key] == MANDATORY or key == "53"}
    for fields in (echo, mandatory):
        candidate = Fields({"t": answer_mti, **fields, "39": code})
        try:
            messages.validate(candidate)
        except MessageError:
            continue
        return candidate
    return None


def request_digest(request: Mapping[str, str]) -> str:
    """SHA-256 of what makes a request the same one again: every field but the KSN and the MAC,
    which a repeat renews, with a repeat's MTI (0221, 0401) as its original's. PAN, track 2 and
    PIN block are left out (the digest is stored): field 55's cryptogram tells cards apart."""
    mti = str(request.get("t"))
    same = {key: value for key, value in request.items() if key not in ("2", "35", "52", "53", "64", "128")}
    same["t"] = _REPEAT_OF.get(mti, mti)
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def _tlv_values(data: bytes) -> dict[int, bytes]:
    return dict(tlv.primitives(tlv.decode(data)))


def _aid(chip: Mapping[int, bytes]) -> bytes | None:
    """The application: '84' (DF Name) of field 55, else '9F06'."""
    return chip.get(_TAG_DF_NAME) or chip.get(_TAG_AID_TERMINAL)


def _rid(aid: bytes | None) -> str | None:
    """The scheme: the AID's first 5 bytes (ISO/IEC 7816-5 registered application provider)."""
    return aid[:_RID_LENGTH].hex().upper() if aid and len(aid) >= _RID_LENGTH else None


class HostProcessor:
    """Turns request frames into answers; one per host simulator, used from one thread."""

    def __init__(self, keys: HostKeys, issuer: SimulatedIssuer, accounts: Accounts, ledger: Ledger,
                 faults: Faults, scripts: Callable[[], IssuerScripts],
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.keys = keys
        self.issuer = issuer
        self.accounts = accounts
        self.ledger = ledger
        self.faults = faults
        self.scripts = scripts
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    # --- one frame ------------------------------------------------------------------------

    def handle(self, frame: bytes) -> Answer:
        try:
            request = messages.unpack(frame)
        except MessageError as exc:
            return self._malformed(frame, exc)
        mti = request["t"]
        keys = self._keys(request)
        if keys is None:
            return Answer(None, f"{mti} without a usable KSN in field 53: no answer")
        try:
            messages.verify_mac(frame, keys.request_mac)
        except MacError:
            return self._refuse(request, keys, Code.SECURITY_VIOLATION, "MAC does not verify")
        if mti not in RESPONSE_OF:
            return Answer(None, f"{mti} is not a request: no answer")
        base = _REPEAT_OF.get(mti, mti)
        terminal, stan, sent = request["41"], request["11"], request["7"]
        where = f"terminal {terminal!r} STAN {stan} KSN {format_ksn(keys.ksn)}"
        with self.ledger.transaction():
            digest = request_digest(request)
            stored = self.ledger.answer(terminal, base, stan, sent)
            if stored is not None and stored.digest == digest:
                return self._reply(request, keys, stored.fields, f"{mti} {where}: repeat, answered as before")
            if stored is not None or (base in _CARD_MTIS and self.ledger.open_stan_in_use(terminal, stan)):
                return self._reply(request, keys, {"39": Code.DUPLICATE},
                                   f"{mti} {where}: STAN already used by another request, not booked")
            host_fields, booked, note = self._process(base, request, keys)
            self.ledger.remember(terminal, base, stan, sent, digest, host_fields)
        answer = self._reply(request, keys, host_fields, f"{mti} {where}: {note}")
        return Answer(answer.data, answer.summary, booked)

    def _keys(self, fields: Mapping[str, str]) -> RequestKeys | None:
        try:
            ksn = messages.key_serial(fields)
        except MessageError:
            return None
        if ksn is None:
            return None
        try:
            return self.keys.request_keys(ksn)
        except DukptError:
            return None

    def _malformed(self, frame: bytes, problem: MessageError) -> Answer:
        fields = _lenient(frame)
        if fields is None:
            return Answer(None, f"unreadable frame of {len(frame)} bytes ({problem}): no answer")
        keys = self._keys(fields)
        if keys is None:
            return Answer(None, f"malformed {fields.get('t', '?')!r} without a usable KSN ({problem}): "
                                "no answer")
        has_mac = any(number in fields for number in ("64", "128")) and len(frame) > MAC_LENGTH
        mac_ok = has_mac and hmac.compare_digest(keys.request_mac(bytes(frame[:-MAC_LENGTH])),
                                                 bytes(frame[-MAC_LENGTH:]))
        code = Code.FORMAT_ERROR if mac_ok else Code.SECURITY_VIOLATION
        return self._refuse(fields, keys, code, f"malformed ({problem})" if mac_ok
                            else f"malformed ({problem}) and its MAC does not verify")

    def _refuse(self, request: Mapping[str, str], keys: RequestKeys, code: str, why: str) -> Answer:
        mti = request.get("t", "?")
        answer = error_response(request, code)
        if answer is None:
            return Answer(None, f"{mti!r} {why}: no answer can be built")
        data = messages.attach_mac(answer, keys.response_mac, ksn=keys.ksn)
        return Answer(data, f"{mti} {why}: answered {code}")

    def _reply(self, request: Fields, keys: RequestKeys, host_fields: Mapping[str, str], note: str) -> Answer:
        icc = host_fields.get("55")
        answer = messages.response_to(request, host_fields["39"], approval_code=host_fields.get("38"),
                                      rrn=host_fields.get("37"),
                                      icc_data=bytes.fromhex(icc) if icc is not None else None)
        data = messages.attach_mac(answer, keys.response_mac, ksn=keys.ksn)
        return Answer(data, f"{note} -> {host_fields['39']}")

    def _process(self, mti: str, request: Fields, keys: RequestKeys) -> tuple[dict[str, str], bool, str]:
        if mti in (Mti.AUTHORIZATION, Mti.FINANCIAL):
            return self._authorize(request, keys)
        if mti == Mti.ADVICE:
            return self._advice(request)
        if mti == Mti.REVERSAL:
            return self._reversal(request)
        if mti == Mti.RECONCILIATION:
            return self._reconcile(request)
        return self._network(request)

    # --- card transactions ------------------------------------------------------------------

    def _new_entry(self, request: Fields, *, code: str, rid: str | None, advice: bool = False,
                   completes: int | None = None) -> NewEntry:
        pan = request.get("2")
        return NewEntry(
            terminal_id=request["41"], merchant_id=request["42"], acquirer_id=request["32"],
            mti=_REPEAT_OF.get(request["t"], request["t"]),
            stan=request["11"], transmission=request["7"], local_date=request["13"], local_time=request["12"],
            processing_code=request["3"], amount=int(request["4"]), currency=int(request["49"]),
            pan_token=pan_token(pan) if pan else None, pan_masked=masked(pan) if pan else None, rid=rid,
            response_code=code, approved=code == Code.APPROVED, advice=advice, completes=completes)

    def _book(self, entry: NewEntry) -> Entry:
        return self.ledger.book(entry, at=self.clock())

    def _authorize(self, request: Fields, keys: RequestKeys) -> tuple[dict[str, str], bool, str]:
        try:
            chip = _tlv_values(bytes.fromhex(request["55"]))
        except EmvError:
            chip = None
        aid = _aid(chip) if chip is not None else None
        rid = _rid(aid)
        psn = int(request["23"]) if "23" in request else None
        cards = self.issuer.find(request["2"], psn, aid) if chip is not None else []
        check = self.issuer.check(cards, bytes.fromhex(request["55"])) if cards else None
        if chip is None or (check is not None and check.status is ArqcStatus.FORMAT):
            code, note = Code.FORMAT_ERROR, "field 55 unusable"
        elif check is None:
            code, note = Code.INVALID_CARD, "card unknown to the simulated issuer"
        elif not check.verified or check.card is None:
            code, note = Code.DO_NOT_HONOUR, "ARQC does not verify"
        else:
            code, note = self._decide(request, keys, chip, check.card)
        iad = b""
        if check is not None and check.verified:
            iad = tlv.encode(_TAG_IAD, check.issuer_authentication_data(code.encode(),
                                                                         approved=code == Code.APPROVED))
            scripts = self.scripts()
            if code == Code.APPROVED and not scripts.empty:
                iad += check.script(scripts)
        entry = self._book(self._new_entry(request, code=code, rid=rid))
        answer = {"39": code, "37": entry.rrn}
        if entry.approval_code is not None:
            answer["38"] = entry.approval_code
        if iad:
            answer["55"] = iad.hex().upper()
        return answer, True, f"{note}, booked as entry {entry.id}"

    def _decide(self, request: Fields, keys: RequestKeys, chip: Mapping[int, bytes],
                card: IssuedCard) -> tuple[str, str]:
        signed = chip.get(_TAG_AMOUNT, b"").hex()
        if not signed.isdigit() or int(signed) != int(request["4"]):
            return Code.INVALID_AMOUNT, "field 4 is not the amount the card signed ('9F02')"
        forced = self.faults.take_decline()
        if forced is not None:
            return forced, "declined by the armed fault"
        pin: str | None = None
        if "52" in request:
            try:
                pin = pinblock.decipher_pinblock_iso_4(keys.pin_key, bytes.fromhex(request["52"]),
                                                       request["2"])
            except ValueError:
                pin = ""  # not a format 4 block under this key: a wrong PIN
        code = self.accounts.decide(card, request, pin=pin, today=self.clock().date())
        del pin
        return code, "ARQC verified" + (", online PIN checked" if "52" in request else "")

    def _advice(self, request: Fields) -> tuple[dict[str, str], bool, str]:
        if "56" in request:
            return self._completion(request)
        try:
            chip = _tlv_values(bytes.fromhex(request["55"]))
        except EmvError:
            return {"39": Code.FORMAT_ERROR}, False, "advice with unreadable field 55, not booked"
        account = self.ledger.account(pan_token(request["2"]))
        if account is not None and account.blocked:
            # the card approved offline, the issuer refuses after the fact: booked as declined
            entry = self._book(self._new_entry(request, code=Code.RESTRICTED_CARD, rid=_rid(_aid(chip)),
                                               advice=True))
            return ({"39": Code.RESTRICTED_CARD, "37": entry.rrn}, True,
                    f"offline approval of a blocked account refused, booked as entry {entry.id}")
        entry = self._book(self._new_entry(request, code=Code.APPROVED, rid=_rid(_aid(chip)), advice=True))
        return {"39": Code.APPROVED, "37": entry.rrn}, True, f"offline approval booked as entry {entry.id}"

    def _completion(self, request: Fields) -> tuple[dict[str, str], bool, str]:
        # docs/host-protocol.md, field 56: MTI n4, STAN n6, YYMMDDhhmmss n12, LLVAR acquirer.
        original_data = request["56"]
        original = self.ledger.find_local(request["41"], original_data[:4], original_data[4:10],
                                          original_data[12:16], original_data[16:22])
        if original is None or original.mti != Mti.AUTHORIZATION or not original.counts:
            return {"39": Code.INVALID_TRANSACTION}, False, "completion of no approved pre-authorization"
        if self.ledger.completion_of(original.id) is not None:
            return {"39": Code.DUPLICATE}, False, f"entry {original.id} is already completed"
        entry = self._book(self._new_entry(request, code=Code.APPROVED, rid=original.rid, advice=True,
                                           completes=original.id))
        return ({"39": Code.APPROVED, "37": entry.rrn}, True,
                f"completion of entry {original.id} booked as entry {entry.id}")

    def _reversal(self, request: Fields) -> tuple[dict[str, str], bool, str]:
        # docs/host-protocol.md, field 90: MTI n4, STAN n6, transmission date and time n10, ...
        original_data = request["90"]
        original = self.ledger.find(request["41"], original_data[:4], original_data[4:10],
                                    original_data[10:20])
        if original is None:
            return {"39": Code.APPROVED}, False, "reversal of an unknown transaction, acknowledged"
        if original.reversed:
            return ({"39": Code.DUPLICATE, "37": original.rrn}, False,
                    f"entry {original.id} was already reversed")
        self.ledger.reverse(original.id)
        return {"39": Code.APPROVED, "37": original.rrn}, True, f"entry {original.id} reversed"

    def _reconcile(self, request: Fields) -> tuple[dict[str, str], bool, str]:
        try:
            records = messages.reconciliation_totals(request)
        except MessageError as exc:
            return {"39": Code.FORMAT_ERROR}, False, f"totals refused: {exc}"
        terminal, batch = request["41"], int(request["60"])
        closed = self.ledger.reconciliation(terminal, batch) is not None
        entries = self.ledger.batch_entries(terminal, batch if closed else None)
        theirs = {record.rid.hex().upper(): (record.debit_count, record.debit_amount, record.credit_count,
                                             record.credit_amount) for record in records}
        ours = _totals(entries, int(request["49"]))
        code = Code.APPROVED if _nonzero(theirs) == _nonzero(ours) else Code.RECONCILE_ERROR
        if not closed:
            self.ledger.close_batch(terminal, batch, request["11"], code)
        state = "in balance" if code == Code.APPROVED else "differs"
        return {"39": code}, not closed, f"batch {batch} {state}"

    def _network(self, request: Fields) -> tuple[dict[str, str], bool, str]:
        code = Code.APPROVED if request["70"] in (messages.NetworkCode.SIGN_ON, messages.NetworkCode.ECHO) \
            else Code.FORMAT_ERROR
        return {"39": code}, False, f"network management {request['70']}"


_Totals = dict[str | None, tuple[int, int, int, int]]


def _totals(entries: list[Entry], currency: int) -> _Totals:
    """Per RID: debit count and amount, credit count and amount of the approved, unreversed 0200s
    and 0220s (docs/host-protocol.md, field 63). An entry in another currency than the 0500's
    is a scheme of its own, which the terminal's records cannot match."""
    sums: dict[str | None, list[int]] = {}
    for entry in entries:
        if entry.mti not in (Mti.FINANCIAL, Mti.ADVICE) or not entry.counts:
            continue
        key = entry.rid if entry.currency == currency else f"{entry.rid} in {entry.currency:03d}"
        row = sums.setdefault(key, [0, 0, 0, 0])
        offset = 0 if entry.processing_code[:2] in DEBIT_TYPES else 2
        row[offset] += 1
        row[offset + 1] += entry.amount
    return {key: (row[0], row[1], row[2], row[3]) for key, row in sums.items()}


def _nonzero(totals: Mapping[Any, tuple[int, int, int, int]]) -> dict[Any, tuple[int, int, int, int]]:
    return {key: value for key, value in totals.items() if any(value)}
