"""Many replicas, one service: leases on pull streams (``leases``). The live directory of
sessions is kept by the store (``Store.register_session``/``live_sessions``); forwarding to
the owner replica comes with the wiring (docs/store.md, "What is left"). Nothing here
reads ``config``: the composition root hands in a ``LeaseConfig``."""

from .leases import Lease, LeaseChanges, LeaseConfig, Leases, fair_quota

__all__ = ["Lease", "LeaseChanges", "LeaseConfig", "Leases", "fair_quota"]
