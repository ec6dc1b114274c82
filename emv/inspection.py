"""A technician's non-destructive card read: which applications, and what the chosen one holds.

No GENERATE AC, no VERIFY: selection, GET PROCESSING OPTIONS and READ RECORD only, so the
card's counters (PIN tries, offline counters) are left as they were. The PAN leaves this module
masked only (ARCHITECTURE principle 11).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from emv import apdu, app_data, card_data, dol, selection
from emv.aids import scheme_of
from emv.apdu import Response
from emv.errors import EmvError
from emv.requests import Transmit


class InspectionError(EmvError):
    """The card could not be read; `step` says where it stopped."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"{step}: {reason}")


@dataclass(frozen=True)
class ApplicationSummary:
    aid: str
    label: str | None
    preferred_name: str | None
    priority: int | None
    blocked: bool
    scheme: str | None


@dataclass
class CardReport:
    """What `tpe card read` shows; every field is safe to print."""

    selection_method: str
    applications: list[ApplicationSummary]
    aid: str | None = None
    label: str | None = None
    preferred_name: str | None = None
    scheme: str | None = None
    pan_masked: str | None = None
    pan_sequence_number: int | None = None
    expiry: str | None = None
    effective: str | None = None
    issuer_country: int | None = None
    language: list[str] = field(default_factory=list)
    aip: list[str] = field(default_factory=list)
    afl: list[dict[str, int]] = field(default_factory=list)
    cvm_list: dict[str, Any] | None = None
    ca_public_key_index: int | None = None
    application_usage_control: list[str] = field(default_factory=list)
    gpo_format: int | None = None
    records_read: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hex(value: bytes) -> str:
    return value.hex().upper()


def _summaries(candidates: Iterable[selection.Candidate]) -> list[ApplicationSummary]:
    return [ApplicationSummary(_hex(c.aid), c.label, c.preferred_name, c.priority, c.blocked,
                               scheme_of(c.aid)) for c in candidates]


def read_card(terminal_aids: Iterable[bytes], terminal_data: Mapping[int, bytes],
              aid: bytes | None = None) -> Generator[Transmit, Response, CardReport]:
    """Read the card. `terminal_data` fills the PDOL (Book 3, 5.4); `aid` forces the choice."""
    terminal_aids = list(terminal_aids)
    candidates = yield from selection.pse_candidates()
    method = "pse"
    if not candidates:
        candidates = yield from selection.aid_list_candidates(terminal_aids)
        method = "aid_list"
    ordered = selection.order(candidates)
    report = CardReport(selection_method=method, applications=_summaries(ordered))
    usable = [c for c in ordered if not c.blocked]
    if aid is not None:
        usable = [c for c in usable if c.aid.startswith(aid)]
    for chosen in usable:
        try:
            fci = yield from selection.select_application(chosen.aid)
        except selection.SelectionError as exc:
            if not exc.blocked:
                raise
            # Book 1, 12.4: a blocked application is not selected; try the next candidate.
            report.applications = [replace(a, blocked=True) if a.aid == _hex(chosen.aid) else a
                                   for a in report.applications]
            continue
        break
    else:
        return report
    report.aid = _hex(fci.df_name)
    report.scheme = scheme_of(fci.df_name)
    report.label = fci.label or chosen.label
    report.preferred_name = fci.preferred_name or chosen.preferred_name
    if fci.language:
        report.language = _decode("language preference", card_data.languages, fci.language)
    yield from _read_application(report, fci, terminal_data)
    return report


def _decode(step: str, decoder: Any, value: bytes) -> Any:
    try:
        return decoder(value)
    except EmvError as exc:
        raise InspectionError(step, str(exc)) from exc


def _read_application(report: CardReport, fci: selection.Fci,
                      terminal_data: Mapping[int, bytes]) -> Generator[Transmit, Response, None]:
    # Book 3, 10.1: GET PROCESSING OPTIONS with the PDOL data (or an empty '83 00').
    try:
        pdol_data = dol.build(fci.pdol, terminal_data) if fci.pdol else b""
    except EmvError as exc:
        raise InspectionError("pdol", str(exc)) from exc
    response = yield Transmit(apdu.get_processing_options(pdol_data))
    if response.sw != 0x9000:
        raise InspectionError("get processing options", f"card answered {response.sw:04X}")
    try:
        options = app_data.parse_gpo(response.data)
    except app_data.AppDataError as exc:
        raise InspectionError(exc.step, exc.reason) from exc
    report.gpo_format = options.gpo_format
    report.aip = _decode("aip", card_data.decode_aip, options.aip).names()
    entries = _decode("afl", card_data.parse_afl, options.afl)
    report.afl = [{"sfi": e.sfi, "first": e.first, "last": e.last, "oda": e.oda_count}
                  for e in entries]
    # Book 3, 10.2: read every record the AFL names.
    try:
        records = yield from app_data.read_records(entries)
    except app_data.AppDataError as exc:
        raise InspectionError(exc.step, exc.reason) from exc
    report.records_read = records.count
    found: dict[int, bytes] = {}
    for tag, value in records.data:
        found.setdefault(tag, value)
    _fill(report, found)


def _fill(report: CardReport, found: Mapping[int, bytes]) -> None:
    pan = found.get(0x5A)
    if pan is not None:
        report.pan_masked = card_data.mask_pan(_decode("pan", card_data.pan_digits, pan))
    elif 0x57 in found:
        report.pan_masked = card_data.mask_pan(_decode("track 2", card_data.track2_pan, found[0x57]))
    if found.get(0x5F34):
        report.pan_sequence_number = int(found[0x5F34].hex()) if found[0x5F34].hex().isdigit() else None
    if 0x5F24 in found:
        report.expiry = _decode("expiry", card_data.format_expiry, found[0x5F24])
    if 0x5F25 in found:
        report.effective = _decode("effective date", card_data.decode_date, found[0x5F25]).isoformat()
    if 0x5F28 in found:
        report.issuer_country = _decode("issuer country", card_data.country_code, found[0x5F28])
    if 0x8E in found:
        cvm = _decode("cvm list", card_data.decode_cvm_list, found[0x8E])
        report.cvm_list = {
            "amount_x": cvm.amount_x, "amount_y": cvm.amount_y,
            "rules": [{"method": r.method_name, "condition": r.condition_name,
                       "continue_if_unsuccessful": r.apply_next_if_unsuccessful} for r in cvm.rules]}
    if 0x8F in found and len(found[0x8F]) == 1:
        report.ca_public_key_index = found[0x8F][0]
    if 0x9F07 in found:
        report.application_usage_control = _decode("auc", card_data.decode_auc, found[0x9F07]).names()
    if not report.language and 0x5F2D in found:
        report.language = _decode("language preference", card_data.languages, found[0x5F2D])
