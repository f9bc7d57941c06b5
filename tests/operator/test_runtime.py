"""``Runtime.gangs`` (``runtime.Serial``): one gang reconcile at a time per run, and a burst of events folded into
one more round instead of a thread each."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from trainop.runtime import Serial


def test_calls_during_a_round_fold_into_one_more_round() -> None:
    serial, inside, release = Serial(), threading.Event(), threading.Event()
    rounds: list[int] = []

    def reconcile() -> str:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            inside.set()
            release.wait(5)
        return f"round {len(rounds)}"

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(serial.run, "ns/a", reconcile)
        assert inside.wait(5)
        folded = [serial.run("ns/a", reconcile) for _ in range(5)]  # a burst while round 1 runs
        assert folded == [None] * 5, "they return at once"
        assert serial.run("ns/b", lambda: "other run") == "other run", "other runs are not held up"
        release.set()
        assert first.result(5) == "round 2", "the burst cost one more round"
    assert rounds == [0, 1]
    assert serial.run("ns/a", lambda: "idle again") == "idle again"


def test_an_error_ends_the_round_and_frees_the_key() -> None:
    serial = Serial()

    def boom() -> None:
        raise RuntimeError("API down")

    with pytest.raises(RuntimeError):
        serial.run("ns/a", boom)
    assert serial.run("ns/a", lambda: 1) == 1
