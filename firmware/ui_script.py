"""A headless `ui.contract.UiPort` that plays a script: `tpe run --script FILE` (the demo, CI,
a technician without a screen) and the tests.

It answers the firmware's questions from the script, one `[[sale]]` after the other, and writes
each screen the firmware shows to its output, one line each, the receipt in full; it never
writes a PIN. After the last sale it asks the terminal to stop (`then = "stop"`, the default)
or keeps it idle until SIGTERM (`then = "wait"`).

The script is TOML:

    then = "stop"            # or "wait"
    language = "fr"          # the merchant's language (ISO 639-1), default French

    [[sale]]
    amount = 4250            # minor units of the terminal's currency (42.50 EUR)
    tip = 0                  # minor units, added to the amount
    refund = false
    pin = "1234"             # typed when a PIN is asked; leave it out to bypass PIN entry
    choose = 0               # the application picked on a co-badged card (index), or -1: cancel
    confirm = true           # the cardholder confirms the amount
    sign = true              # the cardholder signs when asked
    receipt = "done"         # or "print"
    cancel = false           # the merchant cancels on the present-card screen
    menu = "refund"          # instead of a sale: open the merchant menu on this flow (MENU_ITEMS)
    code = "1234"            # the merchant code typed when asked (never written out)
    ticket = 3               # the ticket picked in a list (its number); 0: the newest
    training = true          # the settings screen's answer: training mode on or off
    set_language = "en"      # the settings screen's answer: the merchant's language
    preauth = 12             # the pre-authorization picked (its number); 0: the oldest
    release = false          # release the pre-authorization picked instead of completing it

A `menu = "refund"` entry keys its `amount` on the refund keypad the menu opens; `menu =
"preauth"` on the pre-authorization keypad; `menu = "completion"` picks a pre-authorization and
keys `amount` as its final amount (or releases it).

The present-card screen waits for the card (the firmware withdraws it when the card comes);
the merchant menu and the offline queue are left at once.

With an `inner` UI (the touchscreen off screen, `tpe run --script FILE --screenshots DIR`) every
view and every question is also shown there, and a screenshot of each is written to
`screenshots` as NN-<name>.png; the script still gives the answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from firmware.money import CURRENCIES, MAX_AMOUNT, format_amount
from ui.contract import (
    LANGUAGES,
    MENU_ITEMS,
    OPEN_MENU,
    AmountEntry,
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
    PreauthChoice,
    PresentCard,
    Processing,
    Question,
    Receipt,
    Settings,
    Status,
    TicketChoice,
    View,
)

MAX_SCRIPT_BYTES = 1 << 20
KEPT = 300  # the last screens, questions, screenshots and languages a ScriptedUi keeps (issue 8)
THEN = ("stop", "wait")
RECEIPT_ANSWERS = ("done", "print")
_SALE_KEYS = ("amount", "tip", "refund", "pin", "choose", "confirm", "sign", "receipt", "cancel", "menu",
              "code", "ticket", "training", "set_language", "preauth", "release")


class ScriptError(Exception):
    """A script that cannot be played: which file, which key, and why (never a PIN's value)."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}")


@dataclass(frozen=True)
class ScriptedSale:
    amount: int
    tip: int = 0
    refund: bool = False
    pin: str | None = field(default=None, repr=False)
    choose: int = 0
    confirm: bool = True
    sign: bool = True
    receipt: str = "done"
    cancel: bool = False
    menu: str | None = None
    code: str | None = field(default=None, repr=False)
    ticket: int = 0
    training: bool | None = None
    set_language: str | None = None
    preauth: int = 0
    release: bool = False


@dataclass(frozen=True)
class Script:
    sales: tuple[ScriptedSale, ...]
    then: str = "stop"
    language: str = "fr"


def load_script(path: Path) -> Script:
    """Read and check a script file. `ScriptError` names the file, the key and the reason."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ScriptError(file, "(file)", f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SCRIPT_BYTES:
        raise ScriptError(file, "(file)", f"larger than {MAX_SCRIPT_BYTES} bytes")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScriptError(file, "(file)", f"not TOML: {exc}") from None
    return parse_script(document, file)


def parse_script(document: dict[str, Any], file: str = "(script)") -> Script:
    unknown = sorted(set(document) - {"sale", "then", "language"})
    if unknown:
        raise ScriptError(file, unknown[0], "unknown key; known: sale, then, language")
    then = document.get("then", "stop")
    if then not in THEN:
        raise ScriptError(file, "then", f"one of {', '.join(THEN)}")
    language = document.get("language", "fr")
    if language not in LANGUAGES:
        raise ScriptError(file, "language", f"one of {', '.join(LANGUAGES)}")
    tables = document.get("sale", [])
    if not isinstance(tables, list):
        raise ScriptError(file, "sale", "write each sale as a [[sale]] table")
    sales = tuple(_sale(table, f"sale[{n}]", file) for n, table in enumerate(tables, start=1))
    return Script(sales, then, language)


def _sale(table: Any, where: str, file: str) -> ScriptedSale:
    if not isinstance(table, dict):
        raise ScriptError(file, where, "a table")
    for key in table:
        if key not in _SALE_KEYS:
            raise ScriptError(file, f"{where}.{key}", f"unknown key; known: {', '.join(_SALE_KEYS)}")

    def integer(key: str, default: int | None, low: int) -> int:
        value = table.get(key, default)
        if value is None:
            raise ScriptError(file, f"{where}.{key}", "missing")
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_AMOUNT:
            raise ScriptError(file, f"{where}.{key}", f"an integer from {low} to {MAX_AMOUNT} (minor units)")
        return value

    def boolean(key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise ScriptError(file, f"{where}.{key}", "true or false")
        return value

    pin = table.get("pin")
    if pin is not None and not (isinstance(pin, str) and pin.isascii() and pin.isdigit()
                                and 4 <= len(pin) <= 12):
        raise ScriptError(file, f"{where}.pin", "4 to 12 digits, as a string")  # ISO 9564-1, 5.1
    choose = table.get("choose", 0)
    if isinstance(choose, bool) or not isinstance(choose, int) or choose < -1:
        raise ScriptError(file, f"{where}.choose", "an application index from 0, or -1 to cancel")
    receipt = table.get("receipt", "done")
    if receipt not in RECEIPT_ANSWERS:
        raise ScriptError(file, f"{where}.receipt", f"one of {', '.join(RECEIPT_ANSWERS)}")
    menu = table.get("menu")
    if menu is not None and menu not in MENU_ITEMS:
        raise ScriptError(file, f"{where}.menu", f"one of {', '.join(MENU_ITEMS)}")
    code = table.get("code")
    if code is not None and not (isinstance(code, str) and code.isascii() and code.isdigit()
                                 and 4 <= len(code) <= 8):
        raise ScriptError(file, f"{where}.code", "4 to 8 digits, as a string")
    ticket = table.get("ticket", 0)
    if isinstance(ticket, bool) or not isinstance(ticket, int) or ticket < 0:
        raise ScriptError(file, f"{where}.ticket", "a ticket number, or 0 for the newest")
    preauth = table.get("preauth", 0)
    if isinstance(preauth, bool) or not isinstance(preauth, int) or preauth < 0:
        raise ScriptError(file, f"{where}.preauth", "a pre-authorization number, or 0 for the oldest")
    training = table.get("training")
    if training is not None and not isinstance(training, bool):
        raise ScriptError(file, f"{where}.training", "true or false")
    set_language = table.get("set_language")
    if set_language is not None and set_language not in LANGUAGES:
        raise ScriptError(file, f"{where}.set_language", f"one of {', '.join(LANGUAGES)}")
    amount = integer("amount", 1 if menu is not None else None, 1)
    tip = integer("tip", 0, 0)
    if amount + tip > MAX_AMOUNT:
        raise ScriptError(file, f"{where}.tip", f"amount and tip together are at most {MAX_AMOUNT}")
    return ScriptedSale(amount, tip, boolean("refund", False), pin, choose, boolean("confirm", True),
                        boolean("sign", True), receipt, boolean("cancel", False), menu, code, ticket,
                        training, set_language, preauth, boolean("release", False))


def describe(item: View | Question) -> str:
    """One line for a screen or a question: what a technician reads on the console (no PIN)."""
    money = getattr(item, "money", None)
    amount = f" {format_amount(money.amount, money.exponent)} {money.currency}" if money is not None else ""
    match item:
        case Idle():
            return "screen idle"
        case PresentCard(refund=refund, preauth=preauth):
            return f"screen present card{amount}" + (" (refund)" if refund else " (pre-authorization)"
                                                     if preauth else "")
        case Processing(step=step):
            return f"screen processing: {step}"
        case Outcome(approved=approved, reason=reason, offline=offline, signature_required=signature):
            words = ("PRE-AUTHORIZATION " if item.preauth else "") + ("APPROVED" if approved else "DECLINED")
            extra = [word for word, on in (("offline", offline), ("signature", signature)) if on]
            return (f"screen {words}{amount}" + (f" ({reason})" if reason else "")
                    + (f" [{', '.join(extra)}]" if extra else ""))
        case Receipt():
            return "screen receipt"
        case Error(kind=kind):
            return f"screen error: {kind}"
        case AskAmount(currency=currency, purpose=purpose, maximum=maximum, exponent=exponent):
            most = f", at most {format_amount(maximum, exponent)}" if maximum is not None else ""
            return f"ask amount ({currency}{'' if purpose == 'sale' else ', ' + purpose}{most})"
        case AskApplication(labels=labels):
            return f"ask application: {' | '.join(labels)}"
        case AskConfirm():
            return f"ask confirm{amount}"
        case AskPin(online=online, tries_left=tries, last_try=last):
            return (f"ask PIN{amount} ({'online' if online else 'offline'}"
                    + (f", {tries} tries left" if tries is not None else "")
                    + (", LAST TRY" if last else "") + ")")
        case AskSignature():
            return f"ask signature{amount}"
        case AskReceipt():
            return "ask receipt"
        case AskCancel(view=view):
            return f"{describe(view)} (cancel offered)"
        case AskMenu(items=items):
            return f"ask menu: {' | '.join(items)}"
        case AskOfflineQueue(payments=payments):
            return f"ask offline queue: {len(payments)} payment(s)"
        case AskCode(purpose=purpose, refused=refused, locked=locked):
            state = " (LOCKED)" if locked else " (refused)" if refused else ""
            return f"ask merchant code for {purpose}{state}"
        case AskTicket(tickets=tickets, actions=actions):
            return f"ask ticket for {' | '.join(actions)}: {len(tickets)} listed"
        case AskPreauth(preauths=preauths):
            return f"ask pre-authorization: {len(preauths)} open"
        case AskSettlement(report=report):
            return f"ask settlement: batch {report.batch} {report.result}" + (
                ", day closed" if report.day_closed else "")
        case AskSettings(current=current):
            return f"ask settings: {current.language}, training {'on' if current.training else 'off'}"
    return f"screen {type(item).__name__}"


def _keep(kept: list[Any], item: Any) -> None:
    kept.append(item)
    del kept[:-KEPT]


class ScriptedUi:
    """`ui.contract.UiPort` answering from a `Script`. `views`, `questions`, `shots` and
    `languages` keep the last `KEPT` of what the firmware did, `statuses` the last 100, for
    tests: a terminal that plays thousands of sales keeps its memory flat.
    `before_answer(question)` (tests) runs before each answer. `on_done` is called once the
    script has no sale left (`then = "stop"`)."""

    def __init__(self, script: Script, *, out: TextIO | None = None,
                 on_done: Callable[[], None] | None = None,
                 before_answer: Callable[[Question], Any] | None = None,
                 inner: Any = None, screenshots: Path | None = None) -> None:
        self.script = script
        self.inner = inner
        self.screenshots = screenshots
        self.shots: list[Path] = []
        self.shots_taken = 0  # numbers the screenshot files
        self.out = out if out is not None else sys.stdout
        self.on_done = on_done
        self.before_answer = before_answer
        self.views: list[View] = []
        self.questions: list[Question] = []
        self.statuses: list[Status] = []
        self.languages: list[str] = []  # the cardholder language of each switch
        self._next = 0
        self._sale: ScriptedSale | None = None
        self._picked = False  # the sale's pre-authorization was picked: the list is left next
        self._idle_forever: asyncio.Future[None] | None = None

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    # --- UiPort ---------------------------------------------------------------------------

    def _snap(self, item: View | Question) -> None:
        if self.inner is None or self.screenshots is None:
            return
        self.shots_taken += 1
        path = self.screenshots / f"{self.shots_taken:02d}-{type(item).__name__.lower()}.png"
        try:
            _keep(self.shots, self.inner.screenshot(path))
        except Exception as exc:  # a screenshot is a by-product: the sale goes on
            self._say(f"screenshot {path} not written: {exc}")

    def close(self) -> None:
        """Close the inner UI (its display)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def show(self, view: View) -> None:
        _keep(self.views, view)
        self._say(describe(view))
        if self.inner is not None:
            self.inner.show(view)
            self._snap(view)

    def set_status(self, status: Status) -> None:
        if self.inner is not None:
            self.inner.set_status(status)
        if not self.statuses or dataclasses.replace(self.statuses[-1], clock=None) != dataclasses.replace(
                status, clock=None):
            pending = ", ".join(f"{format_amount(a, CURRENCIES.get(c, (0, 2))[1])} {c}"
                                for c, a in sorted(status.pending_amounts.items()))
            self._say(f"status route {status.route or 'none'} ({status.signal_bars} bars), "
                      f"{status.pending_count} pending" + (f" ({pending})" if pending else "")
                      + (f", alerts {', '.join(status.alerts)}" if status.alerts else ""))
        self.statuses.append(status)
        del self.statuses[:-100]

    def cardholder_language(self, preferences: Sequence[str]) -> str:
        chosen = next((code for code in preferences if code in LANGUAGES), self.script.language)
        if self.inner is not None:
            chosen = self.inner.cardholder_language(preferences)
        _keep(self.languages, chosen)
        self._say(f"cardholder language {chosen}")
        return chosen

    async def ask(self, question: Question) -> Any:
        _keep(self.questions, question)
        if isinstance(question, AskCancel):
            _keep(self.views, question.view)
        self._say(describe(question))
        mirror: asyncio.Future[Any] | None = None
        if self.inner is not None:  # the question's screen, shown while the script answers
            mirror = asyncio.ensure_future(self.inner.ask(question))
            await asyncio.sleep(0)
            self._snap(question)
        try:
            return await self._play(question)
        finally:
            if mirror is not None:
                mirror.cancel()
                await asyncio.gather(mirror, return_exceptions=True)

    async def _play(self, question: Question) -> Any:
        if isinstance(question, AskAmount) and not question.refund and question.purpose == "sale":
            if self._next >= len(self.script.sales):
                return await self._finished()
            self._sale = self.script.sales[self._next]
            self._next += 1
            self._picked = False
        if self.before_answer is not None:
            done = self.before_answer(question)
            if asyncio.iscoroutine(done):
                await done
        if isinstance(question, AskCancel) and not (self._sale is not None and self._sale.cancel):
            await asyncio.get_running_loop().create_future()  # until the firmware withdraws it
        return self._answer(question)

    def _answer(self, question: Question) -> Any:
        sale = self._sale
        if sale is None:  # a question outside a sale: nothing scripted for it
            return None
        match question:
            case AskAmount(refund=True):
                return AmountEntry(sale.amount, 0, True)
            case AskAmount(purpose="preauth" | "completion"):
                return AmountEntry(sale.amount)
            case AskAmount():
                if sale.menu is not None:
                    return OPEN_MENU
                return AmountEntry(sale.amount, sale.tip, sale.refund)
            case AskMenu(items=items):
                return sale.menu if sale.menu in items else None
            case AskCode(locked=locked, refused=refused):
                return None if locked or refused else sale.code  # typed once: a wrong code goes back
            case AskTicket(tickets=tickets, actions=actions):
                if not tickets:
                    return None
                seq = sale.ticket or tickets[0].seq
                action = "cancel" if sale.menu == "cancel" or actions == ("cancel",) else actions[0]
                return TicketChoice(seq, action)
            case AskPreauth(preauths=preauths):
                if not preauths or self._picked:
                    return None
                self._picked = True
                action = "release" if sale.release else "complete"
                return PreauthChoice(sale.preauth or preauths[0].payment, action)
            case AskSettlement(report=report, printable=printable):
                self._say(f"  | batch {report.batch}: {report.result}")
                return "print" if printable and sale.receipt == "print" else "done"
            case AskSettings(current=current):
                return Settings(sale.set_language or current.language, current.shuffle,
                                current.training if sale.training is None else sale.training)
            case AskApplication(labels=labels):
                return sale.choose if 0 <= sale.choose < len(labels) else None
            case AskConfirm():
                return sale.confirm
            case AskPin():
                return sale.pin
            case AskSignature():
                return sale.sign
            case AskReceipt(receipt=receipt):
                for line in receipt.lines:
                    self._say(f"  | {line}")
                return sale.receipt
            case AskCancel():
                return sale.cancel
        return None

    async def _finished(self) -> None:
        """No sale left: stop the terminal, or stay idle until it is stopped."""
        self._sale = None
        if self.script.then == "stop" and self.on_done is not None:
            self.on_done()
            return None
        # "wait", or nobody to tell: idle until the firmware withdraws the question (its stop)
        self._idle_forever = asyncio.get_running_loop().create_future()
        await self._idle_forever
        return None

    @property
    def played(self) -> int:
        """The sales begun so far."""
        return self._next
