"""Flows and hosts: the conversations the packets belong to (see docs/flows.md)."""
