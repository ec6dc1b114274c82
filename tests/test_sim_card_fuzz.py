"""Property tests: `SimCard.process` answers anything with a status word and never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_card_support import Terminal, make_card

# ISO 7816-4, 5.6: the status bytes a card answers with; '6F00' would be an internal fault.
_SW1 = {0x61, 0x62, 0x63, 0x67, 0x69, 0x6A, 0x6C, 0x6D, 0x6E, 0x90}
_PROFILES = ["visa_cda_online", "t0_only", "mastercard_cda", "dda_offline_pin", "cb_visa_cobadged"]


def _check(response: bytes) -> None:
    assert isinstance(response, bytes)
    assert len(response) >= 2
    assert response[-2] in _SW1, response[-2:].hex()


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(_PROFILES), capdu=st.binary(max_size=300))
def test_arbitrary_bytes_on_a_fresh_card(name: str, capdu: bytes) -> None:
    card = make_card(name)
    card.power_on()
    _check(card.process(capdu))
    assert card.internal_errors == 0


_commands = st.builds(
    lambda cla, ins, p1, p2, data, le: bytes([cla, ins, p1, p2])
    + (bytes([len(data)]) + data if data else b"") + (bytes([le]) if le is not None else b""),
    cla=st.sampled_from([0x00, 0x80, 0x84, 0x8C, 0xFF]),
    ins=st.sampled_from([0xA4, 0xB2, 0xA8, 0xCA, 0x84, 0x20, 0x88, 0xAE, 0x82, 0xC0, 0x1E, 0x18, 0x16,
                         0x24, 0xDA, 0x00]),
    p1=st.sampled_from([0x00, 0x01, 0x04, 0x10, 0x40, 0x50, 0x80, 0x90, 0x9F, 0xC0]),
    p2=st.sampled_from([0x00, 0x02, 0x0C, 0x14, 0x36, 0x13, 0x17, 0x80, 0x88]),
    data=st.binary(max_size=255),
    le=st.one_of(st.none(), st.integers(0, 255)),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(_PROFILES), ready=st.booleans(), commands=st.lists(_commands, max_size=12))
def test_command_sequences_in_any_state(name: str, ready: bool, commands: list[bytes]) -> None:
    card = make_card(name)
    if ready:
        term = Terminal(card)
        term.start()
        term.generate_ac(0x80)
    else:
        card.power_on()
    for capdu in commands:
        _check(card.process(capdu))
    assert card.internal_errors == 0
