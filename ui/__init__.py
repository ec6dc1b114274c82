"""Touchscreen user interface (pygame)."""
