"""The one precedence of the S3 endpoint, shared by the trainer and the operator.

Highest first: the trainer's ``--s3-endpoint`` flag, the run's ``spec.checkpoint.s3Endpoint``, then the
environment boto3 itself reads (``$AWS_ENDPOINT_URL_S3``, then ``$AWS_ENDPOINT_URL``), then a default (the
operator's ``TRAINOP_S3_ENDPOINT``). None: AWS S3 itself. Empty strings count as unset. The operator passes no
``env`` (its own environment is not the run's); the trainer passes ``os.environ`` where it builds its S3 client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class S3Endpoint(NamedTuple):
    url: str
    source: str  # what to name in an error: "S3 endpoint" (flag or spec), "$AWS_ENDPOINT_URL", "default"


def resolve_s3_endpoint(
    *,
    flag: str | None = None,
    spec: str | None = None,
    env: Mapping[str, str] | None = None,
    default: str | None = None,
) -> S3Endpoint | None:
    """The endpoint to use and where it came from, by the precedence above; None: AWS S3."""
    if flag:
        return S3Endpoint(flag, "S3 endpoint")
    if spec:
        return S3Endpoint(spec, "S3 endpoint")
    for name in ENV_VARS:
        value = env.get(name) if env is not None else None
        if value:
            return S3Endpoint(value, f"${name}")
    return S3Endpoint(default, "default") if default else None
