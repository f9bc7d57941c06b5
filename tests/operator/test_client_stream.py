"""Following a run (trainop.client_stream) without a cluster: which pod's log is followed, and the follow loop
fed from a queue with a fake clock (the outcome after the rest of the log, the drain, timeout, deletion)."""

from __future__ import annotations

import itertools
import queue
from typing import Any

import pytest
from trainop.client_follow import Exit, Follower
from trainop.client_stream import consume, pick_pod

from tests.operator.test_client_follow import Recorder, epoch_json


def pod(name: str, created: str, phase: str = "Running", index: str | None = None) -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-completion-index": index} if index is not None else {}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "labels": labels},
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("pods", "worker0", "done", "expected"),
    [
        ([], False, {}, None),
        ([pod("a", "2026-01-01T00:00:00Z", "Pending")], False, {}, None),  # not started: no log yet
        (
            [pod("a", "2026-01-01T00:00:00Z", "Failed"), pod("b", "2026-01-01T00:01:00Z")],
            False,
            {},
            "b",
        ),  # re-attached: the newest attempt, not the failed one before it
        (
            [pod("a", "2026-01-01T00:00:00Z", "Failed"), pod("b", "2026-01-01T00:01:00Z", "Pending")],
            False,
            {},
            "a",
        ),  # the next attempt is not running yet: the log of the one that failed
        (
            [pod("z", "2026-01-01T00:00:00Z", "Failed"), pod("b", "2026-01-01T00:00:00Z")],
            False,
            {"z": "2026-01-01T00:00:00Z"},
            "b",
        ),  # created in the same second as the one followed to its end
        (
            [pod("b", "2026-01-01T00:01:00Z", "Failed"), pod("a", "2026-01-01T00:00:00Z", "Failed")],
            False,
            {"b": "2026-01-01T00:01:00Z"},
            None,
        ),  # an older attempt is never followed after a newer one
        (
            [pod("w1", "2026-01-01T00:00:01Z", index="1"), pod("w0", "2026-01-01T00:00:00Z", index="0")],
            True,
            {},
            "w0",
        ),  # a multi-worker run: worker 0
    ],
)
def test_pick_pod(
    pods: list[dict[str, Any]], worker0: bool, done: dict[str, str], expected: str | None
) -> None:
    chosen = pick_pod(pods, worker0=worker0, done=done)
    assert (chosen["metadata"]["name"] if chosen else None) == expected


def feed(*events: tuple[str, Any]) -> queue.Queue[tuple[str, Any]]:
    q: queue.Queue[tuple[str, Any]] = queue.Queue()
    for e in events:
        q.put(e)
    return q


def clock(step: float = 1.0) -> Any:
    ticks = itertools.count()
    return lambda: next(ticks) * step


RUNNING = ("run", {"status": {"phase": "Running"}})
SUCCEEDED = ("run", {"status": {"phase": "Succeeded"}})


def test_the_outcome_waits_for_the_rest_of_the_pods_log() -> None:
    d = Recorder()
    events = feed(RUNNING, ("idle", None), ("pod", "p"), SUCCEEDED, ("log", epoch_json(3)), ("eof", "p"))
    result = consume(
        events, Follower("r", d, status_epochs=False), logs=True, timeout=None, clock=clock(0.01)
    )
    assert result == (Exit.OK, "r Succeeded")
    assert d.shown == ["phase Running", "following pod p", "epoch 3"]  # the line after the outcome is shown


def test_a_slow_log_after_the_outcome_is_read_to_its_end() -> None:
    """Each line restarts the drain: a loaded API server that sends a finished run's log slowly (one line per
    3 s here, more than the 2-s drain in total) still shows every epoch before the outcome."""
    d = Recorder()
    lines = [("log", epoch_json(e)) for e in (1, 2, 3)]
    events = feed(("pod", "p"), SUCCEEDED, *lines, ("eof", "p"))
    result = consume(
        events, Follower("r", d, status_epochs=False), logs=True, timeout=None, clock=clock(1.0), drain=2
    )
    assert result == (Exit.OK, "r Succeeded")
    assert d.shown[-3:] == ["epoch 1", "epoch 2", "epoch 3"]


def test_without_logs_the_outcome_ends_at_once() -> None:
    d = Recorder()
    result = consume(feed(SUCCEEDED), Follower("r", d, status_epochs=True), logs=False, timeout=None)
    assert result == (Exit.OK, "r Succeeded")


def test_a_pods_log_that_never_ends_is_waited_for_at_most_the_drain() -> None:
    d = Recorder()
    result = consume(
        feed(("pod", "p"), SUCCEEDED),
        Follower("r", d, status_epochs=False),
        logs=True,
        timeout=None,
        clock=clock(),
        drain=2,
    )
    assert result == (Exit.OK, "r Succeeded")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([RUNNING], (Exit.TIMEOUT, "r: not finished after 5 s (it goes on)")),
        ([RUNNING, ("run", None)], (Exit.API_ERROR, "r was deleted")),
        (
            [("error", "the API server answered 401: Unauthorized")],
            (Exit.API_ERROR, "the API server answered 401: Unauthorized"),
        ),
        (
            [("run", {"status": {"phase": "Failed", "reason": "NaNLoss"}})],
            (Exit.FAILED, "r Failed (NaNLoss)"),
        ),
    ],
)
def test_consume_ends(events: list[tuple[str, Any]], expected: tuple[Exit, str]) -> None:
    follower = Follower("r", Recorder(), status_epochs=True)
    assert consume(feed(*events), follower, logs=False, timeout=5, clock=clock()) == expected
