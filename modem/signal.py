"""Signal strength and radio technology as 3GPP TS 27.007 reports them, for the status bar.

Pure functions over integers already read from `+CSQ` (27.007, 8.5) and from the `<AcT>` of
`+COPS` (7.3) or `+CREG`/`+CEREG` (7.2, 10.1.22). Values the specification calls unknown or
not detectable, and values outside its ranges, give None: a modem that says something odd about
its signal shows no signal rather than a made-up one.
"""

from __future__ import annotations

# 27.007, 8.5: <rssi> 99 is "not known or not detectable" (199 in the TD-SCDMA range)
RSSI_UNKNOWN = 99
RSSI_UNKNOWN_TDSCDMA = 199

# Lowest dBm of each bar count, best first. The CSQ bands modem vendors publish for field
# installs ("marginal" 2-9, "OK" 10-14, "good" 15-19, "excellent" 20-30) with "marginal" split in
# two: rssi 2-5 one bar, 6-9 two bars; rssi 0-1 (-111 dBm and below) is no bar.
BAR_THRESHOLDS: tuple[tuple[int, int], ...] = (
    (-73, 5),   # rssi >= 20
    (-83, 4),   # rssi 15..19
    (-93, 3),   # rssi 10..14
    (-101, 2),  # rssi 6..9
    (-109, 1),  # rssi 2..5
)
MAX_BARS = 5

# 27.007, 7.3 <AcT> (also the <AcT> of +CREG, +CGREG and +CEREG)
_TECHNOLOGY: dict[int, str] = {
    0: "2G",  # GSM
    1: "2G",  # GSM Compact
    2: "3G",  # UTRAN
    3: "2G",  # GSM w/EGPRS
    4: "3G",  # UTRAN w/HSDPA
    5: "3G",  # UTRAN w/HSUPA
    6: "3G",  # UTRAN w/HSDPA and HSUPA
    7: "4G",  # E-UTRAN
    8: "2G",  # EC-GSM-IoT (A/Gb mode)
    9: "4G",  # E-UTRAN (NB-S1 mode)
    10: "4G",  # E-UTRA connected to a 5GCN
}


def rssi_to_dbm(rssi: int) -> int | None:
    """The received signal strength in dBm for a `+CSQ` <rssi> (27.007, 8.5), None if unknown.

    0 is -113 dBm or less, 2..30 are -109..-53 dBm in 2 dB steps, 31 is -51 dBm or more; the
    TD-SCDMA range 100 (-116 dBm or less) .. 191 (-25 dBm or more) goes in 1 dB steps.
    """
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    if 100 <= rssi <= 191:
        return rssi - 216
    return None


def bars(dbm: int | None) -> int:
    """Bars to show, 0 to 5, for a signal of `dbm` (0 when unknown)."""
    if dbm is None:
        return 0
    for lowest, count in BAR_THRESHOLDS:
        if dbm >= lowest:
            return count
    return 0


def technology(act: int | None) -> str | None:
    """"2G", "3G" or "4G" for an access technology <AcT> (27.007, 7.3); None when it is unknown
    or not one of these (the 5G values 11-13, which the modules this driver knows never give)."""
    if act is None:
        return None
    return _TECHNOLOGY.get(act)
