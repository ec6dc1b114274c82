"""Touchscreen user interface (pygame)."""

import os

# pygame prints a banner on import; the firmware logs what it needs itself.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
