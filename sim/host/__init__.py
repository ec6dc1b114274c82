"""The simulated acquirer and issuer host, and the TEST keys it shares with terminals under test."""
