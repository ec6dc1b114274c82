"""The terminal application: reader adapter, transaction driver, command line."""
