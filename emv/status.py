"""Status words SW1 SW2 and what they mean to an EMV terminal.

Sources: ISO/IEC 7816-4, 5.1.3 (Tables 5 and 6), EMV 4.4 Book 1, 9.4.4 and Book 3, 6.3.5 (Table 6),
plus the statuses Book 3 gives for each command in 6.5.
"""

from __future__ import annotations

from emv.errors import ApduError

_EXACT: dict[int, str] = {
    0x9000: "normal processing",
    0x6281: "warning: part of returned data may be corrupted",
    0x6282: "warning: end of file or record reached before reading Le bytes",
    0x6283: "warning: selected file invalidated (application blocked)",
    0x6284: "warning: FCI not formatted according to ISO 7816-4",
    0x6300: "warning: authentication failed",
    0x6400: "error: execution error, state of non-volatile memory unchanged",
    0x6581: "error: memory failure",
    0x6700: "error: wrong length",
    0x6881: "error: logical channel not supported",
    0x6882: "error: secure messaging not supported",
    0x6981: "error: command incompatible with file structure",
    0x6982: "error: security status not satisfied",
    0x6983: "error: authentication method blocked (PIN try limit exceeded)",
    0x6984: "error: referenced data invalidated",
    0x6985: "error: conditions of use not satisfied",
    0x6986: "error: command not allowed (no current EF)",
    0x6987: "error: expected secure messaging data objects missing",
    0x6988: "error: secure messaging data objects incorrect",
    0x6A80: "error: incorrect parameters in the data field",
    0x6A81: "error: function not supported",
    0x6A82: "error: file or application not found",
    0x6A83: "error: record not found",
    0x6A84: "error: not enough memory space in the file",
    0x6A86: "error: incorrect parameters P1-P2",
    0x6A88: "error: referenced data (data objects) not found",
    0x6B00: "error: wrong parameters P1-P2",
    0x6D00: "error: instruction code not supported or invalid",
    0x6E00: "error: class not supported",
    0x6F00: "error: no precise diagnosis",
}

# ISO 7816-4, 5.1.3, Table 5: the meaning of SW1 alone, for SW2 values not listed above.
_BY_SW1: dict[int, str] = {
    0x62: "warning: state of non-volatile memory unchanged",
    0x63: "warning: state of non-volatile memory changed",
    0x64: "error: execution error, state of non-volatile memory unchanged",
    0x65: "error: execution error, state of non-volatile memory changed",
    0x66: "error: security-related issue",
    0x67: "error: wrong length",
    0x68: "error: functions in CLA not supported",
    0x69: "error: command not allowed",
    0x6A: "error: wrong parameters P1-P2",
    0x6B: "error: wrong parameters P1-P2",
    0x6D: "error: instruction code not supported or invalid",
    0x6E: "error: class not supported",
    0x6F: "error: no precise diagnosis",
}


def _check(sw: int) -> None:
    if not isinstance(sw, int) or isinstance(sw, bool) or not 0 <= sw <= 0xFFFF:
        raise ApduError(f"status word must be two bytes, got {sw!r}")


def describe(sw: int) -> str:
    """A short English description of a status word, for logs and diagnostics."""
    _check(sw)
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw in _EXACT:
        return _EXACT[sw]
    if sw1 == 0x61:
        # ISO 7816-4, 5.1.3; EMV 4.4 Book 1, 9.3.1.3: '00' stands for 256 or more.
        return f"normal processing: {sw2 or 256} response bytes still available (GET RESPONSE)"
    if sw1 == 0x6C:
        # EMV 4.4 Book 1, 9.2.2.3.1: re-send the command with Le = SW2.
        return f"error: wrong length Le, exactly {sw2 or 256} bytes available"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        # EMV 4.4 Book 3, 6.5.12.4: VERIFY failed, 'x' tries left.
        return f"warning: counter {sw2 & 0x0F} (verification failed, {sw2 & 0x0F} tries left)"
    if sw1 in _BY_SW1:
        return _BY_SW1[sw1]
    if sw1 & 0xF0 == 0x90:
        return "application-specific status"
    return "unknown status"


def is_warning(sw: int) -> bool:
    """ISO 7816-4, 5.1.3: '62xx' and '63xx' complete the command with a warning."""
    _check(sw)
    return sw >> 8 in (0x62, 0x63)


def pin_tries_left(sw: int) -> int | None:
    """PIN tries left after a VERIFY, when the status word tells (EMV 4.4 Book 3, 6.5.12.4).

    '63Cx' leaves x tries; '6983' and '6984' mean the PIN is blocked (Book 3, 10.5.1), so none.
    Any other status says nothing about the counter: None.
    """
    _check(sw)
    if sw & 0xFFF0 == 0x63C0:
        return sw & 0x0F
    if sw in (0x6983, 0x6984):
        return 0
    return None
