"""coturn (Debian's ``turnserver``) for tests: started from a config file, answered with
aioice's TURN client, stopped by its PID.

Run it inside a private network namespace (``browser_env.loopback_only_network``): it
listens and relays on that namespace's loopback only. The config, the user database and
the PID file live in the test's own temporary folder; nothing of the machine's coturn
(``/etc/turnserver.conf``, ``/var/lib/turn``) is used.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import aioice.turn
from aioice import stun

TURNSERVER = "turnserver"


def missing() -> str | None:
    """Why coturn cannot run here, or None."""
    if shutil.which(TURNSERVER) is None:
        return "coturn's turnserver is not installed (apt-get install -y coturn; .ci/run does it)"
    return None


def loopback_config(secret: str, port: int, folder: Path, relay_ports: tuple[int, int] = (49160, 49200)) -> str:
    """A coturn config for loopback: TURN REST credentials (``use-auth-secret``), relaying
    to loopback peers (the server under test lives there)."""
    return "\n".join([
        "listening-ip=127.0.0.1", f"listening-port={port}", "relay-ip=127.0.0.1",
        f"min-port={relay_ports[0]}", f"max-port={relay_ports[1]}",
        "use-auth-secret", f"static-auth-secret={secret}", "realm=rtc-yolo.test",
        "fingerprint", "no-cli", "no-tls", "no-dtls", "allow-loopback-peers", "no-multicast-peers",
        "no-software-attribute",
    ]) + "\n" + local_files(folder)


def local_files(folder: Path) -> str:
    """Log, user database and PID file in ``folder`` (never the machine's /var/lib/turn)."""
    return f"log-file=stdout\nsimple-log\nverbose\nuserdb={folder / 'turndb'}\npidfile={folder / 'turnserver.pid'}\n"


class Coturn:
    """One ``turnserver -c CONFIG`` process; ``port`` is the listening port in that config."""

    def __init__(self, config: str, folder: Path, port: int, host: str = "127.0.0.1") -> None:
        self.folder, self.port, self.host = folder, port, host
        self.config_path = folder / "turnserver.conf"
        self.config_path.write_text(config)
        self.log_path = folder / "turnserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20.0) -> Coturn:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([TURNSERVER, "-c", str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited {self.proc.returncode}:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"turnserver not answering after {timeout} s:\n{self.log[-3000:]}")
        return self

    def answers(self) -> bool:
        """A STUN Binding request gets an answer (coturn is listening)."""
        request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(request, (self.host, self.port))
                return len(s.recv(2048)) >= 20
            except OSError:
                return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    async def allocate(self, username: str, password: str) -> aioice.turn.TurnClientUdpProtocol:
        """A TURN allocation with these credentials (the protocol, connected); raises
        ``stun.TransactionFailed`` carrying coturn's error code when it refuses."""
        loop = asyncio.get_running_loop()
        server = (self.host, self.port)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: aioice.turn.TurnClientUdpProtocol(server, username=username, password=password,
                                                      lifetime=600, channel_refresh_time=500),
            remote_addr=server)
        try:
            await protocol.connect()
        except BaseException:
            transport.close()
            raise
        return protocol

    async def refusal(self, username: str, password: str) -> int:
        """The error code coturn answers an allocation with (fails if it allocates)."""
        try:
            protocol = await self.allocate(username, password)
        except stun.TransactionFailed as exc:
            return int(exc.response.error_code)
        await close_allocation(protocol)
        raise AssertionError(f"coturn allocated a relay for {username!r}")


async def close_allocation(protocol: aioice.turn.TurnClientUdpProtocol) -> None:
    await protocol.delete()
