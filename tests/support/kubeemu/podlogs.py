"""``GET /api/v1/namespaces/NS/pods/NAME/log`` (``kubectl logs``): the kubelet harness's log file of the pod.

Why here and not in the kubelet: a real API server proxies logs from the node's kubelet; the toy kubelet
(``kubelet.Kubelet``) runs each pod as a local process whose stdout and stderr go to ``<workdir>/<pod>.log``, and it
may live in another process than the emulator (the demo runs it beside the operator). So the emulator is told
that directory (``python -m tests.support.kubeemu.server --pod-logs DIR``) and serves the file: plain text,
``tailLines``, ``limitBytes``, and ``follow=true`` (streams until the pod is Succeeded/Failed or deleted).

Not emulated, and answered 400 rather than silently ignored: ``previous=true`` (the kubelet never restarts a
container in place: a retry is a new pod, as with ``restartPolicy: Never``), ``timestamps``, ``sinceSeconds`` and
``sinceTime`` (the file has no per-line times). Log files are named by pod name only (not namespace): the
kubelet's random pod suffixes keep them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Mapping
from typing import Any

import aiohttp.web

from .errors import ApiError

FOLLOW_POLL_SECONDS = 0.2
_TERMINAL = ("Succeeded", "Failed")
_NOT_EMULATED = ("sinceSeconds", "sinceTime")


def log_file(directory: pathlib.Path | None, pod: dict[str, Any], query: Mapping[str, str]) -> pathlib.Path:
    """The pod's log file, or the ApiError a real API server would answer instead."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    container = query.get("container") or (names[0] if names else "")
    if names and container not in names:
        raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {meta['name']}")
    if query.get("previous") in ("true", "1"):
        raise ApiError(
            400,
            "BadRequest",
            f'previous terminated container "{container}" in pod "{meta["name"]}" not found',
        )
    if query.get("timestamps") in ("true", "1") or any(query.get(p) for p in _NOT_EMULATED):
        raise ApiError(400, "BadRequest", "timestamps, sinceSeconds and sinceTime are not emulated")
    path = directory / f"{meta['name']}.log" if directory is not None else None
    if path is None or not path.is_file():
        why = "no kubelet ran it" if directory is not None else "the emulator has no --pod-logs directory"
        raise ApiError(
            400,
            "BadRequest",
            f'container "{container}" in pod "{meta["name"]}" is waiting to start: {why}',
        )
    return path


def head(path: pathlib.Path, query: Mapping[str, str]) -> tuple[bytes, int]:
    """What a first read answers (``tailLines`` applied) and the file offset it ends at."""
    whole = path.read_bytes()
    data, tail = whole, _int(query, "tailLines")
    if tail is not None:
        data = b"".join(whole.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
    return data, len(whole)


async def serve(
    raw: aiohttp.web.BaseRequest,
    path: pathlib.Path,
    query: Mapping[str, str],
    phase: Any,
) -> aiohttp.web.StreamResponse:
    """Answer with the log; ``phase()`` is the pod's phase now (None once the pod is gone), for ``follow``."""
    limit = _int(query, "limitBytes")
    data, offset = head(path, query)
    if query.get("follow") not in ("true", "1"):
        return aiohttp.web.Response(
            body=data[:limit] if limit is not None else data, content_type="text/plain"
        )
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(raw)
    sent = 0
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while True:
            if limit is not None:
                data = data[: max(0, limit - sent)]
            if data:
                await response.write(data)
                sent += len(data)
            if limit is not None and sent >= limit:
                break
            done = phase() in (*_TERMINAL, None)  # asked before reading, so nothing written after is lost
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
            offset += len(data)
            if done and not data:
                break
            if not data:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
        await response.write_eof()
    return response


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "BadRequest", f"{name}: {value!r} is not an integer") from None
    if number < 0:
        raise ApiError(400, "BadRequest", f"{name}: must be non-negative")
    return number
