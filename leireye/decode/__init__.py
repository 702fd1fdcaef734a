"""Decoding frames: the fast batch decoder (`decode`), the packet-detail dissector (`detail`),
the header definitions and naming rules both share, and in `reference/` the plain dpkt decoder
the fast one is checked against."""
