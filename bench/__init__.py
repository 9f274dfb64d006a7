"""Benchmarks: ``python -m bench.<name>``; each prints a table, then one JSON line."""
