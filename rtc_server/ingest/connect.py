"""A TCP connect that another thread can abort.

``socket.create_connection`` blocks for up to its timeout on an address that drops the
SYN (a black-holed camera), and neither closing nor shutting the socket down from another
thread reliably wakes it. Stopping a pull source must be bounded, so the source's
connections are made non-blocking here, waiting in short slices and giving up as soon as
``aborted()`` says so.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable

#: How often a pending connect looks at ``aborted``, in seconds.
SLICE = 0.05


def connect(address: str, port: int, timeout: float, aborted: Callable[[], bool]) -> socket.socket:
    """A connected blocking socket to ``address``:``port`` (an IP literal); raises
    ``TimeoutError`` after ``timeout`` s, ``ConnectionAbortedError`` once ``aborted()``, or
    the connect's own error (``ConnectionRefusedError``...)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex((address, port))
        deadline = time.monotonic() + timeout
        while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            if aborted():
                raise ConnectionAbortedError("the source is stopping")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connecting to {address}:{port} took over {timeout:g} s")
            _, writable, _ = select.select([], [sock], [], min(SLICE, remaining))
            if writable:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                break
        if code:
            raise OSError(code, os.strerror(code))  # the errno's own subclass (ConnectionRefusedError...)
        sock.setblocking(True)
        sock.settimeout(timeout)
        return sock
    except BaseException:
        sock.close()
        raise
