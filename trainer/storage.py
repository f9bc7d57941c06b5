"""Object IO on a local directory or S3-compatible storage, behind one small interface.

Why: checkpoints, metrics and the user's candles may live on local disk (a laptop run), in a bucket (a
cluster run on AWS, MinIO, SeaweedFS, Ceph) or on a PersistentVolumeClaim (a cluster without S3). The trainer
only ever needs put/get/list/delete of whole objects, so the backends implement the ``Storage`` protocol and
everything above them is backend-agnostic.

``pvc://CLAIM/path`` is a directory the operator mounts: ``$TRAINER_PVC_ROOT/CLAIM/path`` (the Job mounts the
claim at ``$TRAINER_PVC_ROOT/CLAIM``). ``PVCStorage`` is ``LocalStorage`` on that directory whose URIs stay
``pvc://...``: whatever the trainer prints or reports (status.checkpoint, resume lines, metrics.json) says
which claim holds the checkpoints, never a mount path that only exists inside the pod.

Guarantees:
- Local writes go to a temp file in the same directory, are fsynced and renamed into place, so a reader (or
  a crash) never sees a partial file. An S3 PUT is atomic by itself.
- S3 calls use botocore's own retry modes and timeouts; credentials come only from the standard boto3 chain
  (env, profile, IRSA) and the endpoint by ``trainer.api.endpoint.resolve_s3_endpoint``: the argument, else
  ``$AWS_ENDPOINT_URL_S3``/``$AWS_ENDPOINT_URL`` (read by boto3), else
  AWS.
- The S3 backend is ``trainer.storage_s3`` (boto3 is imported only there, when a bucket is used).
- Errors are translated into ``StorageError`` subclasses whose messages name the bucket/endpoint/URI and the
  S3 error code -- never a credential (we build every message ourselves from known-safe parts).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from trainer.api.errors import ConfigError, StorageUnavailable
from trainer.api.patterns import split_pvc_uri

S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_USERINFO_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/?#@]*@)")
ENDPOINT_RE = re.compile(r"^https?://[^\s/@?#]+(?::\d+)?(?:/\S*)?$")
#: Where the operator mounts each PersistentVolumeClaim of a run: ``$TRAINER_PVC_ROOT/<claim>``.
PVC_ROOT_ENV = "TRAINER_PVC_ROOT"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: every URL the project prints goes through here."""
    return _USERINFO_RE.sub(r"\g<scheme>***@", url)


class StorageError(StorageUnavailable):
    """Base of every failure of storage that exists but cannot be used now (exit 3, retried); the message is
    safe to log (no credentials)."""


class MalformedURIError(ConfigError, ValueError):
    """A URI that is neither a local path, ``s3://bucket/prefix`` nor ``pvc://CLAIM/path`` (a typo: exit 2,
    never retried)."""


class PVCNotMountedError(ConfigError):
    """``pvc://`` without ``$TRAINER_PVC_ROOT``: no claim is mounted here (exit 2: a retry cannot mount one)."""


class InvalidEndpointError(ConfigError, ValueError):
    """An S3 endpoint that is not ``http(s)://host[:port]``; the message names where it came from."""


class BucketNotFoundError(StorageError):
    """The bucket does not exist at the endpoint."""


class CredentialsError(StorageError):
    """No credentials, or S3 rejected them (wrong key id, wrong secret, expired token)."""


class AccessDeniedError(StorageError):
    """Credentials were accepted but lack permission for the bucket/prefix."""


class StorageUnavailableError(StorageError):
    """The endpoint could not be reached or kept failing after botocore's retries."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object or file does not exist."""


@dataclass(frozen=True)
class ParsedURI:
    """``scheme='s3'``: bucket + key (no leading/trailing slash); ``scheme='pvc'``: the claim as bucket, the
    path under it as key; ``scheme='file'``: key is the path."""

    scheme: Literal["s3", "pvc", "file"]
    bucket: str
    key: str


def check_endpoint(endpoint: str, source: str) -> str:
    """``endpoint`` if it is ``http(s)://host[:port][/path]``; else InvalidEndpointError naming ``source`` (the
    flag, field or variable it came from). Credentials in the URL are refused: they belong in the boto3 chain."""
    shown = redact_url(endpoint)
    if _USERINFO_RE.match(endpoint):
        raise InvalidEndpointError(
            f"{source} {shown!r}: credentials in the URL are not used and would be logged; give them as "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the run's s3CredentialsSecret)"
        )
    if not ENDPOINT_RE.match(endpoint):
        raise InvalidEndpointError(
            f"{source} {shown!r}: expected a URL with a scheme such as http://127.0.0.1:9000 or "
            "https://s3.example.com"
        )
    return endpoint


def parse_uri(uri: str) -> ParsedURI:
    """Split ``s3://bucket/key``, ``pvc://claim/path`` or a local path (``file://`` allowed); anything else is
    MalformedURIError."""
    if not isinstance(uri, str) or not uri.strip():
        raise MalformedURIError(f"malformed URI {uri!r}: expected a local path or s3://bucket/prefix")
    shown = redact_url(uri)
    if uri.startswith("s3:") or uri.startswith("S3:"):
        m = S3_URI_RE.match(uri)
        if not m:
            raise MalformedURIError(f"malformed URI {shown!r}: expected s3://bucket/prefix")
        return ParsedURI("s3", m.group("bucket"), (m.group("key") or "").strip("/"))
    if uri[:4].lower() == "pvc:":
        try:
            claim, path = split_pvc_uri(uri)
        except ValueError as exc:
            raise MalformedURIError(f"malformed URI {exc}") from None
        return ParsedURI("pvc", claim, path)
    if uri.startswith("file://"):
        return ParsedURI("file", "", uri[len("file://") :])
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", uri):
        raise MalformedURIError(
            f"malformed URI {shown!r}: only local paths, s3://bucket/prefix and pvc://CLAIM/path are supported"
        )
    return ParsedURI("file", "", uri)


class Storage(Protocol):
    """Whole-object IO under a root (a directory or an S3 prefix); keys are '/'-separated and relative."""

    @property
    def root_uri(self) -> str: ...

    def uri_for(self, key: str) -> str: ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def check(self, write: bool = True) -> None: ...


class LocalStorage:
    """A directory; writes are temp file + fsync + atomic rename (+ fsync of the directory)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def root_uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def uri_for(self, key: str) -> str:
        return str(self._path(key))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri_for(key)} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFoundError(f"{self.uri_for(key)} is a directory, not a file") from None
        except NotADirectoryError:
            raise ObjectNotFoundError(
                f"{self.uri_for(key)} does not exist (a part of that path is a file, not a directory)"
            ) from None
        except PermissionError:
            raise StorageError(f"cannot read {self.uri_for(key)}: permission denied") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.endswith("/") else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def check(self, write: bool = True) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if write:
                self.put(".write-probe", b"ok")
                self.delete(".write-probe")
        except OSError as exc:
            raise StorageError(
                f"cannot write to checkpoint directory {self._where()}: {exc.strerror}"
            ) from None

    def _where(self) -> str:
        return str(self.root)


class PVCStorage(LocalStorage):
    """``pvc://CLAIM/path``: the directory ``<pvc_root>/CLAIM/path`` (the claim's mount), named by its URI."""

    def __init__(self, claim: str, path: str, pvc_root: str | None = None) -> None:
        root = pvc_root if pvc_root is not None else os.environ.get(PVC_ROOT_ENV, "")
        self.claim, self.path = claim, path.strip("/")
        uri = self._uri(self.path)
        if not root:
            raise PVCNotMountedError(
                f"{uri}: checkpoint.uri pvc:// names a PersistentVolumeClaim that the operator mounts into the "
                f"trainer's pod, and ${PVC_ROOT_ENV} (where the claims are mounted) is not set: run it as a "
                f"TrainingRun in the cluster, or set {PVC_ROOT_ENV} to a directory that holds {claim}/"
            )
        super().__init__(Path(root) / claim / self.path if self.path else Path(root) / claim)

    def _uri(self, key: str) -> str:
        return f"pvc://{self.claim}/{key}" if key else f"pvc://{self.claim}"

    @property
    def root_uri(self) -> str:
        return self._uri(self.path)

    def uri_for(self, key: str) -> str:
        return self._uri(f"{self.path}/{key}".strip("/") if key else self.path)

    def _where(self) -> str:
        return f"{self.root_uri} (mounted at {self.root})"


def storage_for(uri: str, endpoint: str | None = None, **s3_options: Any) -> Storage:
    """The backend for a root URI: ``LocalStorage`` for a path, ``S3Storage`` for ``s3://bucket/prefix``,
    ``PVCStorage`` for ``pvc://claim/path``."""
    parsed = parse_uri(uri)
    if parsed.scheme == "s3":
        from trainer.storage_s3 import S3Storage

        return S3Storage(parsed.bucket, parsed.key, endpoint, **s3_options)
    if parsed.scheme == "pvc":
        return PVCStorage(parsed.bucket, parsed.key)
    return LocalStorage(parsed.key)


def _split_object(uri: str, endpoint: str | None) -> tuple[Storage, str]:
    parsed = parse_uri(uri)
    if parsed.scheme == "s3":
        if not parsed.key or parsed.key.endswith("/"):
            raise MalformedURIError(
                f"malformed URI {redact_url(uri)!r}: expected s3://bucket/key of an object"
            )
        from trainer.storage_s3 import S3Storage

        return S3Storage(parsed.bucket, "", endpoint), parsed.key
    if parsed.scheme == "pvc":
        parent, _, name = parsed.key.rpartition("/")
        if not name:
            raise MalformedURIError(f"malformed URI {uri!r}: expected pvc://claim/path of a file")
        return PVCStorage(parsed.bucket, parent), name
    path = Path(parsed.key)
    return LocalStorage(path.parent), path.name


def read_bytes(uri: str, endpoint: str | None = None) -> bytes:
    """The bytes of ``s3://bucket/key`` or a local file (used by the data loader for CSV/Parquet)."""
    storage, key = _split_object(uri, endpoint)
    return storage.get(key)


def write_bytes(uri: str, data: bytes, endpoint: str | None = None) -> None:
    """Write a whole object/file atomically (local: temp + fsync + rename)."""
    storage, key = _split_object(uri, endpoint)
    storage.put(key, data)
