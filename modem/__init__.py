"""Cellular modem: AT-command protocol and link management."""
