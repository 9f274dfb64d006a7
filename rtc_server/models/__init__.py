"""The models tools: fetching, quantizing, evaluating models and writing the accuracy record.

A package above the engine (``python -m rtc_server.models ...``, ``cli.py``): it imports
``rtc_server.engine``, which never imports it back. Runtime code never needs it.
"""
