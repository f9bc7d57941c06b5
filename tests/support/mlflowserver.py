"""A real MLflow tracking server for the tests: ``mlflow server`` on 127.0.0.1 with a SQLite backend.

Why a real server and not a mock: the tracking promises (one MLflow run across a resume, found again by its tag;
params, metrics and artefacts readable back; a run that never waits for the server) are about what the MLflow
client does over HTTP against the REST API and the artefact proxy. Only a real server exercises that.

The server gets a free port, its SQLite file and artefact directory in a temporary directory
(``--serve-artifacts``: the client uploads through the server, as in a cluster), one worker and no job runner
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: a second heavy process the tests do not need). Readiness is
``GET /health`` answering 200. ``stop()`` ends the CLI and the uvicorn process it started (its process group).

Use the session fixture ``mlflow_server`` (``from tests.support.mlflowserver import mlflow_server  # noqa: F401``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import LocalServer, find_binary, free_ports, stop_process


def mlflow_binary() -> str:
    """The ``mlflow`` CLI next to this interpreter (the dev extra installs it), else on PATH."""
    return find_binary("mlflow", "the mlflow CLI is not installed: pip install -e '.[dev]' (mlflow)")


class MlflowServer(LocalServer):
    """One ``mlflow server`` process; ``start()`` after ``stop()`` reuses the port and the data."""

    name = "mlflow server"
    start_timeout = 180.0

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(Path(workdir or tempfile.mkdtemp(prefix="mlflowserver-")), "mlflow.log")
        self.artifacts = self.workdir / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            mlflow_binary(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        return env

    def _probe(self) -> bool:
        with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        """SIGTERM to the CLI (it forwards it to uvicorn), then whatever is left of its process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, timeout=5)  # a test server: its data goes with the directory anyway
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    server = MlflowServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
