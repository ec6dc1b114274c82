"""The touchscreen's own error."""

from __future__ import annotations

from emv.errors import EmvError


class UiError(EmvError):
    """A catalogue that cannot be used, a message key missing, or a test helper that found no
    such button: what and why."""
