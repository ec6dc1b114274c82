"""EMV level-2 kernel: BER-TLV, tags, DOLs, APDUs and transport rules.

Protocol code only: nothing in this package does I/O (tests/test_emv_no_io.py keeps it so).
"""
