"""Run `i2i-serve` as a child process and wait until it is SERVING (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+):(\d+)")
READY = re.compile(r"(?<![A-Z_])SERVING ")  # not NOT_SERVING


class ServerProcess:
    """`python -m i2i.serving --repository R --port 0 ...`, its address read from its log.

    Use as a context manager, or call `start()` and `stop()`. Its log lines are kept in
    `log` (stderr is read continuously, so the server never blocks on a full pipe).
    """

    def __init__(
        self,
        repository: Path,
        *flags: str,
        host: str = "127.0.0.1",
        start_timeout: float = 300.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command: Sequence[str] = [
            sys.executable, "-m", "i2i.serving", "--repository", str(repository),
            "--host", host, "--port", "0",
            "--drain-delay-s", "0",  # no load balancer to wait for; *flags may override
            *flags,
            "--log-level", "INFO",  # last, so it wins: start() reads the INFO lines
        ]  # fmt: skip
        self.start_timeout = start_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log: deque[str] = deque(maxlen=2000)  # the latest lines only
        self.target = ""
        self.process: subprocess.Popen[str] | None = None
        self._serving = threading.Event()

    def start(self) -> ServerProcess:
        """Start the server and return once it reports SERVING (RuntimeError otherwise)."""
        self.process = subprocess.Popen(
            self.command, stderr=subprocess.PIPE, text=True, env=self.env
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not self._serving.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=5)
                raise RuntimeError("i2i-serve did not start:\n" + "".join(list(self.log)[-30:]))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            found = LISTENING.search(line)
            if found:
                host = found.group(1)
                self.target = f"{'127.0.0.1' if host == '0.0.0.0' else host}:{found.group(2)}"
            if READY.search(line) and self.target:
                self._serving.set()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the drain, return the exit status (killed after `timeout`)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
