"""Every screen in every state, drawn headless into PNG files: the screenshots for the README and
for review, and, in tests, the proof that every text of the catalogues is on some screen.

    python -m ui.gallery OUT_DIR [--languages fr,de]   (SDL_VIDEODRIVER=dummy when headless)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ui.app import TouchUi
from ui.contract import (
    CODE_PURPOSES,
    LANGUAGES,
    SETTLEMENT_RESULTS,
    AskAmount,
    AskApplication,
    AskCancel,
    AskCode,
    AskConfirm,
    AskMenu,
    AskOfflineQueue,
    AskPin,
    AskPreauth,
    AskReceipt,
    AskSettings,
    AskSettlement,
    AskSignature,
    AskTicket,
    Error,
    Idle,
    Money,
    Outcome,
    PreauthLine,
    PresentCard,
    Processing,
    Question,
    Receipt,
    SchemeLine,
    Settings,
    SettlementReport,
    Status,
    TicketLine,
    View,
)
from ui.reasons import REASON_MESSAGES
from ui.screens.outcome import ERROR_KINDS
from ui.screens.progress import CARD_STEPS, OTHER_STEPS

CLOCK = datetime.datetime(2025, 3, 14, 9, 26, tzinfo=datetime.UTC)
SALE = Money(4250, "EUR", 2)
STATUS = Status(route="4G", signal_bars=3, battery_percent=76, pending_count=2,
                pending_amounts={"EUR": 6890}, clock=CLOCK)
RECEIPT_LINES = (
    "        TAXI PARISIEN 75",
    "   12 rue de l'Exemple, Paris",
    "       SIRET 000 000 000 00000",
    "",
    "             VENTE",
    "Ticket n°              000127",
    "Le 14/03/2025          10:26",
    "--------------------------------",
    "Course                  42,50",
    "TOTAL EUR               42,50",
    "  Carte                 42,50",
    "  N° carte   ************0119",
    "  AID          A0000000041010",
    "  Autorisation         123456",
    "--------------------------------",
    "Signature  3F9A-21C7-88D0-5B12",
    "tpe 0.1.0",
)
RECEIPT = Receipt(RECEIPT_LINES, qr="https://receipts.example/t/000127?k=8d5c0e", printable=True)
TRAINING_STATUS = Status(route="4G", signal_bars=3, battery_percent=76, clock=CLOCK, training=True)


def _eur(amount: int) -> Money:
    return Money(amount, "EUR", 2)


TICKETS = (
    TicketLine(131, "cancellation", _eur(-1890), "2025-03-14 10:02"),
    TicketLine(130, "sale", _eur(1890), "2025-03-14 09:58", cancelled=True),
    TicketLine(129, "refund", _eur(-1500), "2025-03-14 09:41"),
    *(TicketLine(128 - n, "sale", _eur(1250 + 730 * n), f"2025-03-14 0{8 - n // 3}:{50 - 7 * n:02d}")
      for n in range(6)),
    TicketLine(122, "sale", _eur(990), "2025-03-13 18:20", training=True),
)
PREAUTHS = tuple(PreauthLine(210 + n, _eur(15000 + 2500 * n), f"2025-03-1{n} 0{7 + n % 3}:1{n}",
                             f"497010******{1234 + 37 * n}") for n in range(8))
SETTLEMENT = SettlementReport(41, (
    SchemeLine("A000000042", 23, _eur(84730), 1, _eur(1500)),
    SchemeLine("A000000004", 7, _eur(19820), 0, _eur(0)),
    SchemeLine("A000000003", 5, _eur(12340), 0, _eur(0)),
), "in_balance", day_closed=True)


@dataclass(frozen=True)
class Shot:
    name: str
    subject: View | Question
    status: Status = STATUS
    cardholder: tuple[str, ...] = ()  # the card's language preferences


def shots() -> list[Shot]:
    out = [
        Shot("idle", Idle()),
        Shot("idle_wifi", Idle(), Status(route="wifi", signal_bars=4, battery_percent=15, clock=CLOCK)),
        Shot("idle_ethernet", Idle(), Status(route="ethernet", clock=CLOCK)),
        Shot("idle_offline", Idle(), Status(route=None, battery_percent=100, charging=True, pending_count=1,
                                            pending_amounts={"EUR": 1200, "GBP": 500},
                                            alerts=("saf_overdue",), clock=CLOCK)),
        Shot("amount", AskAmount("EUR", 2)),
        Shot("amount_tip_menu", AskAmount("EUR", 2, tip=True, menu=True)),
        Shot("menu", AskMenu(), Status(route="4G", signal_bars=2, clock=CLOCK,
                                       alerts=("saf_overdue", "declined_after_the_fact"))),
        Shot("menu_alert_other", AskMenu(),
             Status(route="4G", signal_bars=2, clock=CLOCK, alerts=("printer",))),
        Shot("offline_queue", AskOfflineQueue(tuple(Money(a, "EUR", 2) for a in
                                                    (1250, 4200, 990, 12000, 3550, 800, 2100, 1560)))),
        Shot("offline_queue_empty", AskOfflineQueue(())),
        Shot("present_card", AskCancel(PresentCard(SALE))),
        Shot("present_card_refund", PresentCard(Money(1500, "EUR", 2), refund=True)),
        Shot("application", AskApplication(("CB", "VISA DEBIT"))),
        Shot("confirm", AskConfirm(SALE)),
        Shot("pin_online", AskPin(SALE, online=True, tries_left=3)),
        Shot("pin_offline_last_try", AskPin(SALE, online=False, tries_left=1, last_try=True, shuffled=True)),
        Shot("pin_german_card", AskPin(SALE, online=True), cardholder=("de", "en")),
        Shot("signature", AskSignature(SALE)),
    ]
    out += [Shot(f"processing_{step}", Processing(step)) for step in (*CARD_STEPS, *OTHER_STEPS)]
    out.append(Shot("processing_other", Processing("updating")))
    out += [
        Shot("approved", Outcome(True, SALE)),
        Shot("approved_offline", Outcome(True, SALE, offline=True, signature_required=True)),
        Shot("approved_unknown_reason", Outcome(True, SALE, reason="partial")),
    ]
    seen: set[str] = set()
    for word, message in REASON_MESSAGES.items():
        if message not in seen:
            seen.add(message)
            out.append(Shot(f"declined_{word.replace(':', '_')}", Outcome(False, SALE, reason=word)))
    out += [
        Shot("declined_offline_refused_other", Outcome(False, SALE, reason="offline_refused:no_decision")),
        Shot("declined_no_reason", Outcome(False, SALE)),
        Shot("receipt", AskReceipt(RECEIPT)),
        Shot("receipt_screen_only", AskReceipt(Receipt(RECEIPT_LINES[:10]))),
        Shot("receipt_view", RECEIPT),
    ]
    out += [Shot(f"error_{kind}", Error(kind)) for kind in (*ERROR_KINDS, "unknown")]
    out += [
        Shot("amount_refund", AskAmount("EUR", 2, refund=True)),
        Shot("amount_no_refund", AskAmount("EUR", 2, menu=True, refund_allowed=False)),
        Shot("amount_training", AskAmount("EUR", 2, menu=True), TRAINING_STATUS),
        *(Shot(f"code_{purpose}", AskCode(purpose, tries_left=3)) for purpose in CODE_PURPOSES),
        Shot("code_refused", AskCode("refund", tries_left=1, refused=True), TRAINING_STATUS),
        Shot("code_locked", AskCode("settlement", tries_left=0, refused=True, locked=True)),
        Shot("tickets_history", AskTicket(TICKETS)),
        Shot("tickets_duplicate", AskTicket((*TICKETS[:3], TICKETS[-1]), ("duplicate",)), TRAINING_STATUS),
        Shot("tickets_empty", AskTicket(())),
        Shot("settlement", AskSettlement(SETTLEMENT)),
        *(Shot(f"settlement_{result}", AskSettlement(SettlementReport(42, SETTLEMENT.schemes[:1], result)))
          for result in (*SETTLEMENT_RESULTS[1:], "unknown")),
        Shot("settlement_many_schemes",
             AskSettlement(SettlementReport(43, SETTLEMENT.schemes * 3, "in_balance")), TRAINING_STATUS),
        Shot("settlement_empty", AskSettlement(SettlementReport(44, (), "in_balance", day_closed=True))),
        Shot("settings", AskSettings(Settings("fr", shuffle=True, training=False))),
        Shot("settings_training", AskSettings(Settings("de", shuffle=False, training=True)), TRAINING_STATUS),
        Shot("preauth_amount", AskAmount("EUR", 2, purpose="preauth", refund_allowed=False)),
        Shot("preauth_present_card", AskCancel(PresentCard(_eur(15000), preauth=True))),
        Shot("preauth_approved", Outcome(True, _eur(15000), preauth=True)),
        Shot("preauth_declined", Outcome(False, _eur(15000), reason="offline_refused:preauth", preauth=True)),
        Shot("preauths", AskPreauth(PREAUTHS)),
        Shot("preauths_one", AskPreauth(PREAUTHS[:1])),
        Shot("preauths_empty", AskPreauth(())),
        Shot("completion_amount", AskAmount("EUR", 2, purpose="completion", maximum=15000,
                                            refund_allowed=False)),
        Shot("receipt_duplicate", AskReceipt(Receipt(RECEIPT_LINES, duplicate=True, printable=True))),
        Shot("receipt_training_duplicate", AskReceipt(Receipt(RECEIPT_LINES, qr=RECEIPT.qr, duplicate=True,
                                                              training=True)), TRAINING_STATUS),
    ]
    return out


async def shoot(ui: TouchUi, out_dir: Path | None, selection: Sequence[Shot] | None = None,
                on_frame: Callable[[Shot], None] | None = None) -> list[Path]:
    """Draw each shot on `ui`, save it as NN_name.png in `out_dir` (when given) and call
    `on_frame` with it while it is on the screen."""
    written: list[Path] = []
    for n, shot in enumerate(selection if selection is not None else shots(), start=1):
        ui.set_status(shot.status)
        ui.show(Idle())
        if shot.cardholder:
            ui.cardholder_language(shot.cardholder)
        task: asyncio.Task[object] | None = None
        if isinstance(shot.subject, View):
            ui.show(shot.subject)
        else:
            task = asyncio.get_running_loop().create_task(ui.ask(shot.subject))
        await ui.settle()
        if out_dir is not None:
            written.append(ui.screenshot(out_dir / f"{n:02d}_{shot.name}.png"))
        if on_frame is not None:
            on_frame(shot)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return written


async def _main(out: Path, languages: Sequence[str]) -> None:
    for language in languages:
        ui = TouchUi(language=language, pin_shuffle_seed=7)
        ui.open()
        try:
            paths = await shoot(ui, out / language if len(languages) > 1 else out)
        finally:
            ui.close()
        print(f"{language}: {len(paths)} screens in {paths[0].parent}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ui.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--languages", default="fr",
                        help=f"comma-separated, of {','.join(LANGUAGES)}, or all")
    args = parser.parse_args(argv)
    languages = LANGUAGES if args.languages == "all" else tuple(args.languages.split(","))
    if "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    asyncio.run(_main(args.out, languages))


if __name__ == "__main__":
    main()
