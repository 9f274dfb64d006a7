"""Clients that drive the server from outside — for tests, benchmarks and soak runs.

Not part of the server's runtime package (``rtc_server``): nothing in it is imported by
the server, and it is not installed with it.
"""
