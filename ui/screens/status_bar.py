"""The status bar, always on top and in the merchant's language: route and signal bars, pending
offline payments (count and amounts), an alert marker, battery, clock; in training mode, a band
beneath it on every screen."""

from __future__ import annotations

from ui.contract import Status
from ui.geometry import Box
from ui.i18n import currency_exponent
from ui.screens.base import Env
from ui.widgets import Battery, Label, Panel, SignalBars, Widget

TRANSLATED_ROUTES = ("wifi", "ethernet")
SIGNAL_ROUTES = ("5G", "4G", "3G", "2G", "wifi")
REFERENCE_HEIGHT = 56
TRAINING_HEIGHT = 30  # the training band under the bar


def height(env: Env, status: Status | None = None) -> int:
    """The bar, and the training band beneath it when training mode is on."""
    band = env.px(TRAINING_HEIGHT) if status is not None and status.training else 0
    return env.px(REFERENCE_HEIGHT) + band


def route_text(status: Status, env: Env) -> str:
    if status.route is None:
        return env.tr("status.no_link")
    if status.route in TRANSLATED_ROUTES:
        return env.tr(f"status.{status.route}")
    return status.route  # a radio generation ("4G") is written the same in every language


def widgets(status: Status, box: Box, env: Env) -> list[Widget]:
    tr = env.tr
    px = env.px
    size = px(22)
    out: list[Widget] = []
    if status.training:  # on every screen while it lasts: nothing goes to the bank
        band, box = box.take_bottom(px(TRAINING_HEIGHT))
        out.append(Label(band, tr("status.training"), px(20), "alert", bold=True, fill=True))
    out.insert(0, Panel(box, "status"))
    inner = box.inset(px(6), px(4))
    x = inner.x

    def take(width: int) -> Box:
        nonlocal x
        cell = Box(x, inner.y, width, inner.h)
        x += width + px(4)
        return cell

    has_bars = status.route in SIGNAL_ROUTES
    out.append(Label(take(px(68) if has_bars else px(104)), route_text(status, env), size, "status",
                     align="left", bold=True, wrap=True))
    if has_bars:
        out.append(SignalBars(take(px(32)).inset(0, px(6)), max(0, min(4, status.signal_bars))))
    pending_box = take(px(150))
    if status.pending_count:
        top = Box(pending_box.x, pending_box.y, pending_box.w, pending_box.h // 2)
        bottom = Box(pending_box.x, top.bottom, pending_box.w, pending_box.h - top.h)
        pending = tr("status.pending", count=status.pending_count)
        out.append(Label(top, pending, px(20), "status", align="left"))
        amounts = " + ".join(tr.amount(amount, currency, currency_exponent(currency))
                             for currency, amount in sorted(status.pending_amounts.items()))
        if amounts:
            out.append(Label(bottom, amounts, px(20), "status", align="left"))
    right = inner.right
    clock = Box(right - px(64), inner.y, px(64), inner.h)
    out.append(Label(clock, f"{env.now:%H:%M}", size, "status", align="right", bold=True))
    right = clock.x - px(6)
    if status.battery_percent is not None:
        percent = max(0, min(100, status.battery_percent))
        text_box = Box(right - px(58), inner.y, px(58), inner.h)
        out.append(Label(text_box, tr("status.battery", percent=percent), px(20), "status", align="right"))
        icon = Box(text_box.x - px(30), inner.y + px(12), px(28), inner.h - px(24))
        out.append(Battery(icon, percent, status.charging))
        right = icon.x - px(6)
    if status.alerts:
        side = min(inner.h, px(36))
        out.append(Label(Box(right - side, inner.y + (inner.h - side) // 2, side, side), "!", px(26), "alert",
                         bold=True, fill=True))
    return out

