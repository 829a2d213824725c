"""Benchmarks of fleets_mailbox: ``python -m bench NAME`` (see bench/__main__.py)."""
