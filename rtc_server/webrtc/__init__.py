"""Everything that adapts aiortc/aioice: the peer source (offer answer), ICE addresses,
the UDP port range, marker-bit frame release and codec preference.
"""
