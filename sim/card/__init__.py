"""A software EMV contact card, served in-process or to pcscd through vsmartcard-vpcd."""
