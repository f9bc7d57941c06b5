"""Shared pytest configuration: fixtures for the real parts the tests run against (S3 server, Kubernetes API)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

pytest_plugins = ["tests.support.s3server", "tests.support.kubeemu.fixtures"]
