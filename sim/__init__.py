"""Simulators of the terminal's peers: EMV card, pcscd plumbing, acquirer host, modem."""
