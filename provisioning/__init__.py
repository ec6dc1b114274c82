"""Technician tooling: device identity, key loading, firmware bundles."""
