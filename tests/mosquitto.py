"""A real Mosquitto broker for the MQTT tests (Debian ``mosquitto``): started on a free
loopback port with a config file and a password file in tmp, optionally with TLS; stopped
and started again on the same port (a broker restart). ``Subscriber`` is a real
``mosquitto_sub`` process whose received messages the test reads."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import cannot_run, free_port

USER, PASSWORD = "rtc", "broker-password"


class Mosquitto:
    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        for tool in ("mosquitto", "mosquitto_passwd", "mosquitto_sub"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                cannot_run(f"no {tool}: apt-get install -y mosquitto mosquitto-clients")
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        self.process: asyncio.subprocess.Process | None = None
        passwd = folder / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), USER, PASSWORD], check=True,
                       capture_output=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
                 "persistence false", "user root", f"log_dest file {folder / 'mosquitto.log'}"]
        if tls is not None:
            cert, key = tls
            lines += [f"certfile {cert}", f"keyfile {key}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    async def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = await asyncio.create_subprocess_exec(binary, "-c", str(self.conf),
                                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"mosquitto exited ({self.process.returncode}): {self.log}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
            else:
                writer.close()
                return
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None

    def url(self, prefix: str = "cams", user: str = USER, password: str = PASSWORD) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}/{prefix}"


class Subscriber:
    """``mosquitto_sub -v`` on ``topic`` (QoS 1); ``messages`` holds ``(topic, json)``."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # stdbuf: line-buffered stdout through the pipe (each message as it arrives)
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port),
                "-u", USER, "-P", PASSWORD, "-t", self.topic, "-q", "1", "-v", "-d"]
        if self.broker.tls is not None:
            args += ["--cafile", str(self.broker.tls[0])]
        self._process = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE,
                                                             stderr=subprocess.DEVNULL)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        # -d prints the SUBACK on stdout: subscribed once it is there
        try:
            async with asyncio.timeout(10):
                while not self._subscribed:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            await self.stop()  # leave no subscriber process behind
            raise

    _subscribed = False

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            line = raw.decode().rstrip("\n")
            if "SUBACK" in line:
                self._subscribed = True
            topic, _, payload = line.partition(" ")
            if payload.startswith("{"):
                self.messages.append((topic, json.loads(payload)))

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
