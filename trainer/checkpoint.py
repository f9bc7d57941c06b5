"""Checkpoints that survive storage outages, corruption and hostile files.

Why: a preempted or crashed training Pod must resume from the newest *intact* checkpoint, a storage hiccup
must not kill a multi-hour run, and a checkpoint file must never be able to run code in the trainer.

Layout under the root (a directory or ``s3://bucket/prefix``)::

    checkpoints/epoch-NNNNNN.pt          the last ``keep_last`` epochs (older ones are pruned)
    checkpoints/epoch-NNNNNN.pt.sha256   ``sha256sum -c`` format, written after the object
    best.pt, best.json                   the best epoch so far and its record (epoch, key, size, sha256, time)
    latest.json                          pointer to the newest epoch + ``history`` of kept records + ``best``
    metrics.json, config.json, forecast.png   via ``write_json``/``write_bytes``

Write path: ``save`` serialises the state with ``torch.save`` at once (the tensors keep changing) and hands
the bytes to one background uploader thread; training goes on. Only the newest pending checkpoint is kept
(an older pending *best* is kept too, for ``best.pt``). The uploader writes the object, then its sidecar,
then best.*, and only then ``latest.json`` -- a reader never sees a pointer to a missing or partial object.
Failed uploads are retried with exponential backoff (botocore retries each call underneath), with one warning
line per failed attempt and one line when uploads recover. ``upload_deadline_s`` is measured from the start of
the first failed attempt and bounds it: an attempt still hanging (a frozen server answers no read) counts as
failing from its start, so the next ``save``/``flush`` raises ``UploadDeadlineError`` that many seconds after the
outage began, whatever botocore's timeouts and retries add up to. ``stored`` names the newest checkpoint that
is actually stored -- what a status or log line may point at; ``save`` only returns where it will be.

Read path (records, integrity checks, ``weights_only`` loading, ``resolve_resume``): ``trainer.checkpoint_read``,
whose public names are re-exported here; ``CheckpointStore`` is a ``CheckpointReader`` with the write path.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from trainer.checkpoint_read import (
    _EPOCH_RE,
    BEST,
    BEST_RECORD,
    LATEST,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointReader,
    IncompatibleCheckpointError,
    LoadedCheckpoint,
    NoValidCheckpointError,
    Record,
    UnsafeCheckpointError,
    check_compatible,
    deserialize,
    resolve_resume,
    sha256_hex,
)
from trainer.storage import Storage, StorageError, storage_for

__all__ = [
    "BEST",
    "BEST_RECORD",
    "LATEST",
    "CheckpointError",
    "CheckpointIntegrityError",
    "CheckpointReader",
    "CheckpointStore",
    "FlushTimeoutError",
    "IncompatibleCheckpointError",
    "LoadedCheckpoint",
    "NoValidCheckpointError",
    "Record",
    "Stored",
    "UnsafeCheckpointError",
    "UploadDeadlineError",
    "check_compatible",
    "deserialize",
    "epoch_key",
    "resolve_resume",
    "serialize",
    "sha256_hex",
]

log = logging.getLogger(__name__)

_RESERVED = re.compile(r"^(latest\.json|best\.pt|best\.json|checkpoints/.*)$")
# How long ``with store:`` waits for pending uploads when an exception leaves the block (its own errors logged).
EXIT_FLUSH_SECONDS = 2.0


class UploadDeadlineError(CheckpointError):
    """Storage kept failing for longer than ``uploadDeadlineSeconds``."""


class FlushTimeoutError(CheckpointError):
    """``flush(timeout)`` ran out of time with uploads pending (storage slow or down, deadline not hit)."""


def epoch_key(epoch: int) -> str:
    return f"checkpoints/epoch-{epoch:06d}.pt"


def json_bytes(obj: Any) -> bytes:
    """A JSON artefact as the store writes it (metrics.json, config.json)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n"


def serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Stored:
    """The newest checkpoint a store has uploaded, and best.pt once one is stored."""

    epoch: int
    latest: str
    best: str | None


@dataclass
class _Job:
    epoch: int
    data: bytes
    sha256: str
    is_best: bool


class CheckpointStore(CheckpointReader):
    """Checkpoints, records and run artefacts under one root; see the module docstring for the semantics."""

    def __init__(
        self,
        uri: str,
        endpoint: str | None = None,
        *,
        keep_last: int = 3,
        upload_deadline_s: float = 600.0,
        map_location: str | torch.device = "cpu",
        storage: Storage | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        super().__init__(
            storage or storage_for(uri, endpoint, max_attempts=max_attempts), endpoint, map_location
        )
        self.keep_last = keep_last
        self.upload_deadline_s = upload_deadline_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._cond = threading.Condition()
        self._pending_latest: _Job | None = None
        self._pending_best: _Job | None = None
        self._pending_files: dict[str, bytes] = {}
        self._busy = False
        self._closed = False
        self._down_since: float | None = None
        self._last_error = ""
        self._fatal: CheckpointError | None = None
        self._history: list[Record] | None = None
        self._best: Record | None = None
        self._thread: threading.Thread | None = None
        self._in_flight: tuple[_Job | None, _Job | None, dict[str, bytes]] = (None, None, {})
        self._attempt_started: float | None = None  # while an upload attempt is in flight
        self._stored: Stored | None = None

    def check(self) -> None:
        """Fail fast before training: missing bucket, rejected credentials, unwritable directory."""
        self.storage.check(write=True)

    @property
    def stored(self) -> Stored | None:
        """The newest checkpoint uploaded by this store (None before the first): what a status may name."""
        with self._cond:
            return self._stored

    # ---- write path ----------------------------------------------------------------------------------------

    def save(self, epoch: int, state: dict[str, Any], *, is_best: bool = False) -> str:
        """Serialise now, upload in the background; return the checkpoint's future URI. Never blocks on IO."""
        self._raise_if_failed()
        data = serialize(state)
        job = _Job(epoch, data, sha256_hex(data), is_best)
        with self._cond:
            old = self._pending_latest
            if old is not None:
                log.debug(
                    "checkpoint epoch %d superseded by epoch %d before it was uploaded", old.epoch, epoch
                )
            self._pending_latest = job
            if is_best:
                self._pending_best = job
            self._ensure_thread()
            self._cond.notify_all()
        return self.storage.uri_for(epoch_key(epoch))

    def write_bytes(self, name: str, data: bytes) -> str:
        """Queue an artefact (metrics.json, config.json, forecast.png); the newest bytes per name win."""
        if _RESERVED.match(name) or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"'{name}' is reserved or not a relative artefact name")
        self._raise_if_failed()
        with self._cond:
            self._pending_files[name] = bytes(data)
            self._ensure_thread()
            self._cond.notify_all()
        return self.storage.uri_for(name)

    def write_json(self, name: str, obj: Any) -> str:
        return self.write_bytes(name, json_bytes(obj))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is stored; UploadDeadlineError / FlushTimeoutError otherwise."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._has_pending() or self._busy:
                self._raise_if_failed_locked()
                if end is not None and time.monotonic() >= end:
                    raise FlushTimeoutError(
                        f"checkpoint uploads to {self.uri()} still pending after {timeout:g}s "
                        f"({self._pending_summary()}); last error: {self._last_error or 'none'}"
                    )
                self._cond.wait(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
            self._raise_if_failed_locked()

    def close(self, timeout: float | None = 60.0, *, quiet: bool = False) -> None:
        """Flush (raising its errors; ``quiet``: logging them) and stop the uploader thread."""
        try:
            self.flush(timeout)
        except CheckpointError as exc:
            if not quiet:
                raise
            log.warning("closing the checkpoint store: %s", exc)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(
                    timeout=0.5 if quiet else 5
                )  # on the way out: no long wait for a hung upload

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Normally a close that raises; while an exception leaves the block, a short quiet one, so that the
        exception (a NaN loss, a signal whose flush was already bounded by the grace period) stays the error."""
        if exc_type is None:
            self.close()
        else:
            self.close(EXIT_FLUSH_SECONDS, quiet=True)

    def _has_pending(self) -> bool:
        return self._pending_latest is not None or self._pending_best is not None or bool(self._pending_files)

    def _pending_summary(self) -> str:
        latest, best, files = self._in_flight
        jobs = (self._pending_latest, self._pending_best, latest, best)
        names = [f"epoch {j.epoch}" for j in jobs if j is not None]
        names += sorted({*self._pending_files, *files})
        return ", ".join(dict.fromkeys(names)) or "nothing"

    def _raise_if_failed(self) -> None:
        with self._cond:
            self._raise_if_failed_locked()

    def _raise_if_failed_locked(self) -> None:
        if self._check_deadline_locked() is not None:
            raise self._fatal  # type: ignore[misc]

    def _outage_start_locked(self) -> float | None:
        """When the current outage began: the start of the first failed attempt, or of the attempt in flight
        (which fails unless it ends in time). None while uploads succeed."""
        return self._down_since if self._down_since is not None else self._attempt_started

    def _check_deadline_locked(self) -> CheckpointError | None:
        """Turn an outage longer than the deadline into the sticky fatal error (caller holds the lock)."""
        since = self._outage_start_locked()
        if self._fatal is None and since is not None:
            down = time.monotonic() - since
            if down > self.upload_deadline_s:
                self._fatal = UploadDeadlineError(
                    f"checkpoint storage {self.uri()} has been failing for {down:.1f}s, longer than "
                    f"uploadDeadlineSeconds={self.upload_deadline_s:g}; not stored: "
                    f"{self._pending_summary()}; last error: "
                    f"{self._last_error or 'none yet, an upload attempt got no answer'}"
                )
                log.error("%s", self._fatal)
                self._cond.notify_all()
        return self._fatal

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="checkpoint-uploader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._has_pending() and not self._closed:
                    self._cond.wait()
                if self._fatal is not None or (self._closed and not self._has_pending()):
                    return
                latest, best, files = self._pending_latest, self._pending_best, self._pending_files
                self._pending_latest, self._pending_best, self._pending_files = None, None, {}
                self._busy, self._in_flight = True, (latest, best, files)
                self._attempt_started = attempt = time.monotonic()
            try:
                self._upload(latest, best, files)
            except Exception as exc:  # retried below; surfaced through the deadline
                failures += 1
                with self._cond:
                    self._busy, self._in_flight, self._attempt_started = False, (None, None, {}), None
                    self._down_since = self._down_since or attempt
                    self._last_error = str(exc) if isinstance(exc, StorageError) else type(exc).__name__
                    self._pending_latest = self._pending_latest or latest  # the newest pending wins
                    self._pending_best = self._pending_best or best
                    for name, data in files.items():
                        self._pending_files.setdefault(name, data)
                    if self._check_deadline_locked() is not None:
                        return
                    delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (failures - 1))
                    log.warning(
                        "checkpoint upload failed (attempt %d, retry in %.1fs): %s",
                        failures,
                        delay,
                        self._last_error,
                    )
                    # Wake at the retry time, or just after the deadline so that it is reported promptly.
                    retry_at = min(time.monotonic() + delay, self._down_since + self.upload_deadline_s + 0.05)
                    while not self._closed and (left := retry_at - time.monotonic()) > 0:
                        self._cond.wait(left)
                    if self._closed:
                        return
                continue
            with self._cond:
                if latest is not None:
                    best_uri = self.storage.uri_for(BEST) if self._best is not None else None
                    self._stored = Stored(
                        latest.epoch, self.storage.uri_for(epoch_key(latest.epoch)), best_uri
                    )
                if failures:
                    down = time.monotonic() - (self._down_since or attempt)
                    log.info(
                        "checkpoint uploads to %s recovered after %d failed attempt%s (%.1fs); stored: %s",
                        self.uri(),
                        failures,
                        "" if failures == 1 else "s",
                        down,
                        ", ".join(_names(latest, best, files)) or "nothing",
                    )
                self._busy, self._in_flight, self._attempt_started = False, (None, None, {}), None
                self._down_since, self._last_error = None, ""
                self._cond.notify_all()
            failures = 0

    def _upload(self, latest: _Job | None, best: _Job | None, files: dict[str, bytes]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self._history is None:
            self._load_records()
        if latest is not None:
            key = epoch_key(latest.epoch)
            self.storage.put(key, latest.data)
            self.storage.put(f"{key}.sha256", f"{latest.sha256}  {key.rsplit('/', 1)[1]}\n".encode())
        if best is not None:
            self.storage.put(BEST, best.data)
            self._best = Record(best.epoch, BEST, best.sha256, len(best.data), now)
            self.storage.put(BEST_RECORD, json.dumps(asdict(self._best), indent=2).encode())
        if latest is not None:
            rec = Record(latest.epoch, epoch_key(latest.epoch), latest.sha256, len(latest.data), now)
            history = [r for r in self._history or [] if r.epoch != rec.epoch] + [rec]
            history = history[-self.keep_last :]
            pointer = {
                **asdict(rec),
                "uri": self.storage.uri_for(rec.key),
                "history": [asdict(r) for r in reversed(history)],
                "best": asdict(self._best) if self._best else None,
            }
            self.storage.put(LATEST, json.dumps(pointer, indent=2).encode())
            self._history = history
            self._prune({r.key for r in history})
        for name, data in files.items():
            self.storage.put(name, data)

    def _prune(self, keep: set[str]) -> None:
        try:
            for key in self.storage.list("checkpoints/"):
                base = key.removesuffix(".sha256")
                if _EPOCH_RE.match(base) and base not in keep:
                    self.storage.delete(key)
        except StorageError as exc:  # harmless: retried after the next save
            log.warning("could not prune old checkpoints: %s", exc)

    def _load_records(self) -> None:
        latest = self._read_json(LATEST)
        self._history = (
            [] if latest is None else [Record.from_dict(d) for d in reversed(latest.get("history", []))]
        )
        best = self._read_json(BEST_RECORD)
        self._best = Record.from_dict(best) if best else None


def _names(latest: _Job | None, best: _Job | None, files: dict[str, bytes]) -> list[str]:
    """What a batch of uploads holds, for a log line: "epoch 4", then the artefact names."""
    names = [f"epoch {j.epoch}" for j in (latest, best) if j is not None]
    return list(dict.fromkeys(names)) + sorted(files)
