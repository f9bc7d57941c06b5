"""The S3 backend of ``trainer.storage``: ``s3://bucket/prefix`` on AWS or any S3-compatible endpoint (MinIO,
SeaweedFS, Ceph) through one boto3 client.

Why a module of its own: it is the only place that knows boto3 and botocore (their retry modes, timeouts,
path-style addressing and error codes); ``trainer.storage`` keeps the backend-agnostic part (URIs, the
``Storage`` protocol, the local backend, the error classes) and imports this module only when a bucket is used.
Every error is translated here into a ``StorageError`` subclass whose message names the bucket, the endpoint and
the S3 error code, never a credential.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Literal

from trainer.api.endpoint import resolve_s3_endpoint
from trainer.storage import (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsError,
    InvalidEndpointError,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
    check_endpoint,
    redact_url,
)

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _client_config(
    max_attempts: int,
    connect_timeout: float,
    read_timeout: float,
    mode: Literal["standard", "adaptive"],
    path_style: bool,
) -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": mode, "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"} if path_style else None,
    )


class S3Storage:
    """``s3://bucket/prefix`` on AWS or any S3-compatible endpoint; one thread-safe boto3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        *,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry_mode: Literal["standard", "adaptive"] = "standard",
    ) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # ``endpoint``: the flag or the spec's, already chosen; else the environment's (which boto3 reads itself).
        resolved = resolve_s3_endpoint(flag=endpoint, env=os.environ)
        if resolved:
            check_endpoint(resolved.url, resolved.source)
        self.endpoint_label = redact_url(resolved.url if resolved else "AWS S3")
        # boto3 sessions are not thread-safe; clients are. Build the client once, here.
        config = _client_config(
            max_attempts, connect_timeout, read_timeout, retry_mode, path_style=resolved is not None
        )
        try:
            self.client: Any = boto3.session.Session().client(
                "s3", endpoint_url=endpoint or None, config=config
            )
        except ValueError as exc:  # botocore's "Invalid endpoint: ...", after the checks above: say which
            raise InvalidEndpointError(
                f"S3 endpoint {self.endpoint_label!r} refused by botocore ({type(exc).__name__}); expected "
                "a URL such as http://127.0.0.1:9000"
            ) from None

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _translate(self, exc: Exception, what: str) -> StorageError:
        return translate_s3_error(exc, what, self.bucket, self.endpoint_label)

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._translate(exc, f"uploading {self.uri_for(key)}") from exc

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body
        except Exception as exc:
            raise self._translate(exc, f"reading {self.uri_for(key)}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            err = self._translate(exc, f"checking {self.uri_for(key)}")
            if isinstance(err, ObjectNotFoundError):
                return False
            raise err from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._translate(exc, f"deleting {self.uri_for(key)}") from exc

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(f"{self.prefix}/") if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._translate(exc, f"listing {self.uri_for(prefix)}") from exc
        return sorted(keys)

    def check(self, write: bool = True) -> None:
        """Fail fast: the bucket exists, the credentials are accepted, (``write``) a probe can be written."""
        what = f"checking {self.root_uri}"
        try:
            # A GET (not HEAD) so that the error body carries the code: NoSuchBucket vs SignatureDoesNotMatch.
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
            if write:
                self.client.put_object(Bucket=self.bucket, Key=self._key(".write-probe"), Body=b"ok")
                with contextlib.suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=self._key(".write-probe"))
        except Exception as exc:
            raise self._translate(exc, what) from exc


def translate_s3_error(exc: Exception, what: str, bucket: str, endpoint: str) -> StorageError:
    """A botocore exception as a StorageError; the message uses only codes, names and the endpoint."""
    from botocore import exceptions as bce

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return CredentialsError(
            f"{what}: no S3 credentials found (boto3 chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE, IRSA web identity) for endpoint {endpoint}"
        )
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"{what}: S3 rejected the credentials ({code}) for endpoint {endpoint}; check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the s3CredentialsSecret"
            )
        if code in _MISSING_BUCKET_CODES:
            return BucketNotFoundError(f"{what}: bucket '{bucket}' does not exist at endpoint {endpoint}")
        if code in _MISSING_KEY_CODES:
            return ObjectNotFoundError(f"{what}: object does not exist ({code})")
        if code in {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}:
            return AccessDeniedError(
                f"{what}: access denied ({code}) to bucket '{bucket}' at endpoint {endpoint}"
            )
        return StorageUnavailableError(f"{what}: S3 error {code} (HTTP {status}) at endpoint {endpoint}")
    if isinstance(
        exc,
        bce.EndpointConnectionError
        | bce.ConnectTimeoutError
        | bce.ReadTimeoutError
        | bce.ConnectionClosedError
        | bce.HTTPClientError,
    ):
        return StorageUnavailableError(f"{what}: cannot reach S3 endpoint {endpoint} ({type(exc).__name__})")
    if isinstance(exc, bce.ParamValidationError | bce.InvalidEndpointDiscoveryConfigurationError):
        return StorageError(f"{what}: invalid S3 request at endpoint {endpoint} ({type(exc).__name__})")
    if isinstance(exc, bce.BotoCoreError | OSError):
        return StorageUnavailableError(f"{what}: S3 failure at endpoint {endpoint} ({type(exc).__name__})")
    return StorageError(f"{what}: unexpected {type(exc).__name__} at endpoint {endpoint}")
