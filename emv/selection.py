"""Application selection: building the candidate list (EMV 4.4 Book 1, 12.3) and reading FCIs.

Generators yield `Transmit` and are sent `Response`s; they never touch a reader themselves.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass, field

from emv import apdu, tlv
from emv.aids import PSE_NAME
from emv.apdu import Response
from emv.errors import EmvError, TlvError
from emv.requests import Transmit

# Book 1, 12.3.3: bound on SELECT next occurrence per AID, so a faulty card cannot loop us.
MAX_OCCURRENCES = 16
# Book 1, 12.2.3: a directory SFI is 1..10; records are read until '6A83'.
MAX_DIRECTORY_RECORDS = 32

SW_OK = 0x9000
SW_BLOCKED = 0x6283  # Book 1, 12.3.3 step 3: application blocked (FCI still returned)
SW_CARD_BLOCKED = 0x6A81  # Book 1, 12.3.2 step 1: card blocked or SELECT not supported
SW_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83


class SelectionError(EmvError):
    """Selection cannot go on: the card is blocked, mute, or answers nonsense."""

    def __init__(self, reason: str, *, blocked: bool = False) -> None:
        self.blocked = blocked
        super().__init__(reason)


@dataclass(frozen=True)
class Fci:
    """File Control Information of an ADF or DDF (Book 1, 11.3.4 Tables 43-45)."""

    df_name: bytes
    label: str | None = None
    preferred_name: str | None = None
    priority: int | None = None
    pdol: bytes | None = None
    language: bytes | None = None
    issuer_code_table: int | None = None
    sfi: int | None = None
    discretionary: tuple[tlv.Tlv, ...] = ()


@dataclass(frozen=True)
class Candidate:
    aid: bytes
    label: str | None
    preferred_name: str | None
    priority: int | None  # 1 (highest) .. 15; None when the card gives none (Book 1, 12.2.3)
    confirmation_required: bool
    blocked: bool = False
    source: str = "pse"
    fci: Fci | None = field(default=None, compare=False)

    @property
    def order_key(self) -> tuple[int, int]:
        # Book 1, 12.4: '1' is the highest priority; no priority comes after all others.
        return (0 if self.priority else 1, self.priority or 0)


def _text(value: bytes | None) -> str | None:
    # an/ans with the issuer code table; printable ASCII is what all our cards use.
    if value is None:
        return None
    return value.decode("latin-1").strip()


def parse_fci(data: bytes) -> Fci:
    """Decode an FCI template '6F' (Book 1, 11.3.4). Raises TlvError or SelectionError."""
    objects = tlv.decode(data)
    template = next((o for o in objects if o.tag == 0x6F), None)
    if template is None or template.children is None:
        raise SelectionError("SELECT answer has no FCI template '6F'")
    name = template.find(0x84)
    if name is None:
        raise SelectionError("FCI has no DF name '84'")
    proprietary = template.find(0xA5)
    props = proprietary.children if proprietary and proprietary.children is not None else ()

    def get(tag: int) -> bytes | None:
        found = tlv.find(props, tag)
        return found.value if found else None

    priority = get(0x87)
    sfi = get(0x88)
    code_table = get(0x9F11)
    bf0c = tlv.find(props, 0xBF0C)
    return Fci(
        df_name=name.value,
        label=_text(get(0x50)),
        preferred_name=_text(get(0x9F12)),
        priority=priority[0] if priority else None,
        pdol=get(0x9F38),
        language=get(0x5F2D),
        issuer_code_table=code_table[0] if code_table else None,
        sfi=sfi[0] if sfi else None,
        discretionary=tuple(bf0c.children or ()) if bf0c else (),
    )


def _candidate_from_entry(entry: tlv.Tlv) -> Candidate | None:
    """One directory entry '61' (Book 1, 12.2.3 Table 47); None for a DDF entry."""
    children = entry.children or ()
    aid = tlv.find(children, 0x4F)
    if aid is None:
        return None
    label = tlv.find(children, 0x50)
    preferred = tlv.find(children, 0x9F12)
    priority = tlv.find(children, 0x87)
    indicator = priority.value[0] if priority and priority.value else 0
    return Candidate(
        aid=aid.value,
        label=_text(label.value) if label else None,
        preferred_name=_text(preferred.value) if preferred else None,
        priority=(indicator & 0x0F) or None,
        confirmation_required=bool(indicator & 0x80),
        source="pse",
    )


def pse_candidates() -> Generator[Transmit, Response, list[Candidate] | None]:
    """Book 1, 12.3.2. Returns None when the terminal must fall back to its list of AIDs."""
    response = yield Transmit(apdu.select(PSE_NAME))
    if response.sw == SW_CARD_BLOCKED:
        raise SelectionError("card blocked or SELECT not supported ('6A81')")
    if response.sw != SW_OK:
        return None
    try:
        fci = parse_fci(response.data)
    except (TlvError, SelectionError):
        return None
    if fci.sfi is None or not 1 <= fci.sfi <= 10:
        return None
    found: list[Candidate] = []
    for record in range(1, MAX_DIRECTORY_RECORDS + 1):
        response = yield Transmit(apdu.read_record(record, fci.sfi))
        if response.sw == SW_RECORD_NOT_FOUND:
            break
        if response.sw != SW_OK:
            return None
        try:
            objects = tlv.decode(response.data)
        except TlvError:
            return None
        template = next((o for o in objects if o.tag == 0x70), None)
        if template is None:
            return None
        for entry in template.children or ():
            if entry.tag == 0x61:
                candidate = _candidate_from_entry(entry)
                if candidate is not None:
                    found.append(candidate)
    return found


def aid_list_candidates(aids: Iterable[bytes], partial: bool = True,
                        ) -> Generator[Transmit, Response, list[Candidate]]:
    """Book 1, 12.3.3: SELECT each terminal AID, with 'next occurrence' for partial matches."""
    found: list[Candidate] = []
    for aid in aids:
        response = yield Transmit(apdu.select(aid))
        for _ in range(MAX_OCCURRENCES):
            if response.sw == SW_CARD_BLOCKED:
                raise SelectionError("card blocked or SELECT not supported ('6A81')")
            if response.sw not in (SW_OK, SW_BLOCKED):
                break
            try:
                fci = parse_fci(response.data)
            except (TlvError, SelectionError):
                break
            exact = fci.df_name == aid
            if exact or (partial and fci.df_name.startswith(aid)):
                indicator = fci.priority or 0
                found.append(Candidate(
                    aid=fci.df_name, label=fci.label, preferred_name=fci.preferred_name,
                    priority=(indicator & 0x0F) or None,
                    confirmation_required=bool(indicator & 0x80),
                    blocked=response.sw == SW_BLOCKED, source="aid_list", fci=fci))
            if exact or not partial:
                break
            response = yield Transmit(apdu.select(aid, next_occurrence=True))
    return found


def order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidate list in priority order (Book 1, 12.4), keeping card order among equals."""
    return sorted(candidates, key=lambda c: c.order_key)


def select_application(aid: bytes) -> Generator[Transmit, Response, Fci]:
    """Final selection of one ADF (Book 1, 12.4); the FCI must name that application."""
    response = yield Transmit(apdu.select(aid))
    if response.sw == SW_BLOCKED:
        raise SelectionError("application blocked ('6283')", blocked=True)
    if response.sw != SW_OK:
        raise SelectionError(f"SELECT {aid.hex().upper()} answered {response.sw:04X}")
    try:
        fci = parse_fci(response.data)
    except TlvError as exc:
        raise SelectionError(f"malformed FCI: {exc}") from exc
    if not fci.df_name.startswith(aid):
        raise SelectionError("FCI names another application than the one selected")
    return fci
