"""The screens, one state each, and which one shows a view or asks a question."""

from __future__ import annotations

import random

from ui.contract import (
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
    Outcome,
    PresentCard,
    Processing,
    Question,
    Receipt,
    View,
)
from ui.errors import UiError
from ui.screens.amount import AmountScreen
from ui.screens.base import Answered, Audience, Env, Screen, ViewScreen
from ui.screens.card import ApplicationScreen, ConfirmScreen, PresentCardScreen
from ui.screens.code import CodeScreen
from ui.screens.merchant import MenuScreen, OfflineQueueScreen
from ui.screens.outcome import ErrorScreen, OutcomeScreen
from ui.screens.pin import PinScreen
from ui.screens.progress import ProcessingScreen
from ui.screens.receipt import ReceiptScreen
from ui.screens.settings import SettingsScreen
from ui.screens.settlement import SettlementScreen
from ui.screens.signature import SignatureScreen
from ui.screens.tickets import PreauthScreen, TicketScreen

__all__ = ["Answered", "Audience", "Env", "Screen", "ViewScreen", "screen_for_question", "screen_for_view"]


def screen_for_view(view: View, cancellable: bool = False) -> Screen:
    match view:
        case Idle():
            return AmountScreen(None)
        case PresentCard():
            return PresentCardScreen(view, cancellable)
        case Processing():
            return ProcessingScreen(view, cancellable)
        case Outcome():
            return OutcomeScreen(view, cancellable)
        case Receipt():
            return ReceiptScreen(view)
        case Error():
            return ErrorScreen(view, cancellable)
    raise UiError(f"not a view: {type(view).__name__}")


def screen_for_question(question: Question, shuffle: random.Random,
                        alerts: tuple[str, ...] = ()) -> Screen:
    match question:
        case AskAmount():
            return AmountScreen(question)
        case AskApplication():
            return ApplicationScreen(question)
        case AskConfirm():
            return ConfirmScreen(question)
        case AskPin():
            return PinScreen(question, shuffle)
        case AskSignature():
            return SignatureScreen(question)
        case AskReceipt():
            return ReceiptScreen(question.receipt, question)
        case AskCancel(view=view):
            screen = screen_for_view(view, cancellable=True)
            if not isinstance(screen, ViewScreen):
                raise UiError(f"{type(view).__name__} cannot be cancelled on the screen")
            return screen
        case AskMenu():
            return MenuScreen(question, alerts)
        case AskOfflineQueue():
            return OfflineQueueScreen(question)
        case AskCode():
            return CodeScreen(question)
        case AskTicket():
            return TicketScreen(question)
        case AskPreauth():
            return PreauthScreen(question)
        case AskSettlement():
            return SettlementScreen(question)
        case AskSettings():
            return SettingsScreen(question)
    raise UiError(f"not a question: {type(question).__name__}")
