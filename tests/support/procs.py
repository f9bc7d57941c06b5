"""The child processes the tests start (servers, the operator, trainers): stopping them, and one local server.

One copy of the stop sequence (SIGTERM, wait, then SIGKILL), so every fixture gives its process the same chance
to shut down cleanly before it is killed. One copy of a local server's life (``LocalServer``: start it with its
output in a log file, poll until it answers, stop it, start it again on the same ports and data), so the S3 and
MLflow servers differ only in their command, environment and readiness probe.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    """Terminate ``proc`` if it still runs; kill it if it has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def find_binary(name: str, missing: str) -> str:
    """The ``name`` a pip package installed next to this interpreter, else on PATH; RuntimeError(``missing``)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(missing)
    return found


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalServer:
    """One server process in its own session, logging to ``log_path`` in ``workdir``.

    A subclass names itself (``name``, for errors) and gives ``_command()``, ``_env()`` and ``_probe()``
    (raises, or returns False, while the server is not ready). ``start()`` after ``stop()`` reuses the same
    ports and data.
    """

    name = "server"
    start_timeout = 60.0
    poll_interval = 0.2

    def __init__(self, workdir: Path, log_name: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> None:
        """Start the process unless it runs; return once it is ready (``timeout``: ``start_timeout``)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready(self.start_timeout if timeout is None else timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Poll ``_probe()`` until it is true; raise with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; log:\n{self._log_tail()}"
                )
            try:
                if self._probe():
                    return
            except Exception as exc:  # refused, or answering but not ready yet
                last = exc
            time.sleep(self.poll_interval)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last!r}); log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); the data directory stays for ``start()``."""
        proc, self.proc = self.proc, None
        stop_process(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
