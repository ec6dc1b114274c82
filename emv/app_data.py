"""Initiate application processing and read application data (EMV 4.4 Book 3, 10.1 and 10.2).

Shared by the kernel and the technician's card read: GET PROCESSING OPTIONS answer formats,
and READ RECORD over the AFL with the records for offline data authentication collected.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from emv import apdu, card_data, tlv
from emv.apdu import Response
from emv.errors import EmvError
from emv.requests import Transmit


class AppDataError(EmvError):
    """The card's GPO answer or a record breaks Book 3, 10.1-10.2; `step` names the command."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"{step}: {reason}")


@dataclass(frozen=True)
class ProcessingOptions:
    aip: bytes
    afl: bytes
    gpo_format: int
    objects: tuple[tuple[int, bytes], ...]  # every primitive of a format 2 answer


def parse_gpo(data: bytes) -> ProcessingOptions:
    """Book 3, 6.5.8.4: format 1 ('80' AIP || AFL) or format 2 ('77' with '82' and '94')."""
    step = "get processing options"
    try:
        objects = tlv.decode(data)
    except EmvError as exc:
        raise AppDataError(step, str(exc)) from exc
    if len(objects) != 1:
        raise AppDataError(step, "answer is not one template")
    top = objects[0]
    if top.tag == 0x80:
        if len(top.value) < 6 or (len(top.value) - 2) % 4:
            raise AppDataError(step, "format 1 answer has a bad length")
        aip, afl = top.value[:2], top.value[2:]
        return ProcessingOptions(aip, afl, 1, ((0x82, aip), (0x94, afl)))
    if top.tag == 0x77 and top.children is not None:
        found = list(tlv.primitives(top.children))
        tags = [tag for tag, _ in found]
        if len(set(tags)) != len(tags):
            raise AppDataError(step, "format 2 answer repeats a data object")
        values = dict(found)
        if 0x82 not in values or 0x94 not in values:
            raise AppDataError(step, "format 2 answer lacks '82' or '94'")
        return ProcessingOptions(values[0x82], values[0x94], 2, tuple(found))
    raise AppDataError(step, f"unexpected template {top.tag:X}")


@dataclass
class Records:
    data: list[tuple[int, bytes]] = field(default_factory=list)  # primitives in the order read
    oda: bytearray = field(default_factory=bytearray)  # Book 3, 10.3: static data to authenticate
    oda_invalid: bool = False  # an ODA record in SFI 11-30 was not a '70' template
    count: int = 0


def read_records(afl: Sequence[card_data.AflEntry]) -> Generator[Transmit, Response, Records]:
    """Book 3, 10.2: READ RECORD for every record the AFL names, in order.

    Records of SFI 1-10 must be '70' templates; their value (no tag, no length) takes part in
    ODA. Records of SFI 11-30 take part whole (tag and length included); when such a record is
    not a '70' template, ODA fails (Book 3, 10.3) but reading goes on.
    """
    records = Records()
    for entry in afl:
        for number in range(entry.first, entry.last + 1):
            response = yield Transmit(apdu.read_record(number, entry.sfi))
            where = f"SFI {entry.sfi} record {number}"
            if response.sw != 0x9000:
                raise AppDataError("read record", f"{where} answered {response.sw:04X}")
            records.count += 1
            for_oda = number < entry.first + entry.oda_count
            try:
                objects = tlv.decode(response.data)
            except EmvError as exc:
                if entry.sfi <= 10:
                    raise AppDataError("read record", f"{where}: {exc}") from exc
                # SFI 11-30 records are the issuer's own format (Book 3, 10.2); only ODA cares.
                records.oda_invalid = records.oda_invalid or for_oda
                continue
            is_template = (len(objects) == 1 and objects[0].tag == 0x70
                           and objects[0].children is not None)
            if not is_template:
                if entry.sfi <= 10:
                    raise AppDataError("read record", f"{where} is not a '70' template")
                if for_oda:
                    records.oda_invalid = True
                continue
            if for_oda:
                records.oda += objects[0].value if entry.sfi <= 10 else response.data
            records.data.extend(tlv.primitives(objects[0].children or ()))
    return records
