"""Following a run: the two streams of ``client_kube`` in daemon threads feeding one queue, and the loop that
hands what comes out to a ``client_follow.Follower`` until the run has finished.

Why threads and a queue: the run's watch (re-read after each expiry or error) and the trainer pod's log (which
blocks while the trainer is silent) arrive independently, and the main thread must stay free for Ctrl-C and
the deadline. The log moves to the newest pod as attempts restart (worker 0's for a multi-worker run) and,
after a dropped connection, skips the lines it already put out. ``consume`` -- the loop -- and ``pick_pod``
are pure over a queue and a clock, so they are tested without a cluster; a finished run waits (at most
``DRAIN`` seconds) for the rest of its pod's log, so that the trainer's last lines come before the outcome.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from kubernetes.client.exceptions import ApiException

from .client_follow import Exit, Follower
from .client_kube import Cluster, Json, api_error
from .gang import INDEX_KEY

POLL = 1.0  # seconds between looks for the next pod, and before a retry
DRAIN = 5.0  # seconds of silence a finished run waits for the rest of its pod's log
DRAIN_MAX = 60.0  # ...and at most this long after the outcome, however the log goes on
STARTED = ("Running", "Succeeded", "Failed")


def pod_index(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata") or {}
    return (meta.get("labels") or {}).get(INDEX_KEY) or (meta.get("annotations") or {}).get(INDEX_KEY)


def pick_pod(pods: Iterable[Mapping[str, Any]], *, worker0: bool, done: Mapping[str, str]) -> Json | None:
    """The pod whose log to follow: the newest started one (worker 0's, for a multi-worker run) not followed to
    its end yet and not older than one that was (``done``: pod name -> creationTimestamp)."""
    newest_done = max(done.values(), default="")
    fresh = [
        dict(p)
        for p in pods
        if (p.get("status") or {}).get("phase") in STARTED
        and (not worker0 or pod_index(p) == "0")
        and p["metadata"]["name"] not in done
        and str(p["metadata"].get("creationTimestamp") or "") >= newest_done
    ]
    return max(
        fresh,
        key=lambda p: (str(p["metadata"].get("creationTimestamp") or ""), p["metadata"]["name"]),
        default=None,
    )


Events: TypeAlias = queue.Queue[tuple[str, Any]]


def _run_events(cluster: Cluster, namespace: str, name: str, out: Events, stop: threading.Event) -> None:
    """("run", obj) for every version of the run, ("run", None) once it is gone; errors are retried."""
    warned = False
    while not stop.is_set():
        try:
            for obj in cluster.watch_run(namespace, name, stop):
                out.put(("run", obj))
                warned = False
                if obj is None:
                    return
        except Exception as exc:  # any failure of the watch: say it once, then retry
            if isinstance(exc, ApiException) and exc.status in (401, 403):
                out.put(("error", api_error(exc)))
                return
            if not warned:
                out.put(("line", f"watching {name}: {api_error(exc)}; retrying"))
                warned = True
        stop.wait(POLL)


def _log_events(
    cluster: Cluster, namespace: str, name: str, worker0: bool, out: Events, stop: threading.Event
) -> None:
    """("pod", name) when a pod's log starts, ("log", line) for each line, ("eof", name) once it has ended,
    ("idle", None) when there is no log to follow now, ("nologs", why) when logs cannot be read at all."""
    done: dict[str, str] = {}
    sent: dict[str, int] = {}  # lines of each pod already put out (a reconnect skips them)
    current = None
    while not stop.is_set():
        try:
            pod = pick_pod(cluster.run_pods(namespace, name), worker0=worker0, done=done)
            if pod is None:
                out.put(("idle", None))
                stop.wait(POLL)
                continue
            pod_name = pod["metadata"]["name"]
            if pod_name != current:
                out.put(("pod", pod_name))
                current = pod_name
            for n, line in enumerate(cluster.pod_log(namespace, pod, follow=True), start=1):
                if stop.is_set():
                    return
                if n > sent.get(pod_name, 0):
                    out.put(("log", line))
                    sent[pod_name] = n
            now = cluster.get_pod(namespace, pod_name)
            if now is None or (now.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                done[pod_name] = str(pod["metadata"].get("creationTimestamp") or "")
                out.put(("eof", pod_name))
                continue
        except ApiException as exc:
            if exc.status in (401, 403):
                out.put(("nologs", api_error(exc)))
                return
        except Exception:  # a dropped stream: reconnect, skipping what was sent
            pass
        stop.wait(POLL / 2)


def follow(
    cluster: Cluster,
    namespace: str,
    follower: Follower,
    *,
    logs: bool,
    worker0: bool,
    timeout: float | None,
) -> tuple[Exit, str]:
    """Follow the run until it finishes (its outcome), ``timeout`` passes, or it is deleted."""
    events: Events = queue.Queue()
    stop = threading.Event()
    name = follower.name
    targets: list[Callable[[], None]] = [lambda: _run_events(cluster, namespace, name, events, stop)]
    if logs:
        targets.append(lambda: _log_events(cluster, namespace, name, worker0, events, stop))
    for target in targets:
        threading.Thread(target=target, name=f"follow-{name}", daemon=True).start()
    try:
        return consume(events, follower, logs=logs, timeout=timeout)
    finally:
        stop.set()


def consume(
    events: Events,
    follower: Follower,
    *,
    logs: bool,
    timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
    drain: float = DRAIN,
) -> tuple[Exit, str]:
    """The follower fed from ``events`` until the run's outcome -- after the rest of the pod's log, until it ends
    or is silent for ``drain`` seconds (a slow API server must not cut a finished run's log short) --,
    ``timeout``, or the run's deletion."""
    start = clock()
    result: tuple[Exit, str] | None = None
    # After the outcome: the log thread has said "nothing more now" (eof, idle) or has given up (nologs).
    drained, logs_gone, drain_until, outcome_at = False, not logs, 0.0, 0.0
    while True:
        now = clock()
        if result is not None and (drained or now >= drain_until):
            return result
        if result is None and timeout is not None and now - start >= timeout:
            return Exit.TIMEOUT, f"{follower.name}: not finished after {timeout:g} s (it goes on)"
        try:
            kind, value = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if kind == "run":
            if value is None:
                return Exit.API_ERROR, f"{follower.name} was deleted"
            outcome = follower.run(value)
            if outcome is not None and result is None:
                result, drained, drain_until, outcome_at = outcome, logs_gone, now + drain, now
        elif kind == "pod":
            follower.pod(value)
        elif kind == "log":
            follower.log(value)
            if result is not None:  # the log is still coming: the drain is ``drain`` seconds of silence
                drain_until = min(now + drain, outcome_at + DRAIN_MAX)
        elif kind in ("eof", "idle", "nologs"):
            if kind == "nologs":
                follower.logs_unavailable(value)
                logs_gone = True
            drained = drained or result is not None
        elif kind == "line":
            follower.display.line(value)
        elif kind == "error":
            return Exit.API_ERROR, value
