"""Data-parallel training under torchrun (gloo on CPU): the rank contract, the exit codes that survive the
launcher, equivalence with one process, and resume after a signal or a killed rank (same and other world size).

The processes are real: ``python -m trainer.launch --standalone --nproc-per-node 2 -m trainer run ...`` (torchrun's
own launcher, on a free port), exactly what a pod runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.support.trainer_helpers import (
    ROOT,
    SAMPLE,
    TINY,
    assert_same_weights,
    events,
    final_weights,
    run_trainer,
    trainer_env,
)
from tests.trainer.test_resume import wait_for_epoch
from trainer.api import exitcodes
from trainer.api.errors import ConfigError
from trainer.distributed import Dist, PeerLost, collective_errors
from trainer.launch import exit_code, torchrun_args

# dropout 0: with it, one process and two ranks draw different masks; everything else is the same computation.
ARGS = [*TINY, "--set", "model.dropout=0", "--set", "training.batchSize=16", "--json"]
EPOCHS = "3"
# Two ranks and one process agree to this on the weights after 3 epochs (measured: max |diff| ~1e-6).
ATOL = 1e-4


# --- the rank contract (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Dist()),
        ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Dist(1, 4, 1)),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, Dist(0, 1, 0)),
    ],
)
def test_dist_from_env(env: dict[str, str], expected: Dist) -> None:
    assert Dist.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"WORLD_SIZE": "2"}, "RANK, WORLD_SIZE and LOCAL_RANK"),
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK, WORLD_SIZE and LOCAL_RANK"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=2, WORLD_SIZE=2"),
    ],
)
def test_dist_from_env_refuses_a_broken_environment(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Dist.from_env(env)


def test_shards_are_disjoint_cover_the_batch_and_weigh_to_the_global_mean() -> None:
    batch = torch.randperm(100)[:8]
    shards = [Dist(r, 3, r).shard(batch) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 2]
    assert torch.equal(torch.cat(shards), batch)
    shares = [Dist(r, 3, r).loss_share(8) for r in range(3)]
    # sum_r share_r * mean_r / world == the mean over the 8 rows, for any per-row losses
    rows = torch.rand(8, dtype=torch.float64)
    per_rank = [rows[s_idx].mean() for s_idx in torch.tensor_split(torch.arange(8), 3)]
    assert float(sum(s * m for s, m in zip(shares, per_rank, strict=True)) / 3) == pytest.approx(
        float(rows.mean())
    )
    assert Dist().loss_share(8) == 1.0 and torch.equal(Dist().shard(batch), batch)


def test_a_global_batch_smaller_than_the_world_is_refused_naming_the_field() -> None:
    with pytest.raises(
        ConfigError, match=r"training\.batchSize: 2 .* at least the number of processes \(4\)"
    ):
        Dist(0, 4, 0).check_batch(2)


def test_transport_failures_become_peer_lost_and_bugs_do_not() -> None:
    with pytest.raises(PeerLost, match="lost contact with the other workers"), collective_errors("x"):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1")
    with pytest.raises(KeyError), collective_errors("x"):
        raise KeyError("a bug stays a bug")
    assert PeerLost.exit_code == exitcodes.PEER_LOST == 5


@pytest.mark.parametrize(
    ("failures", "code"),
    [
        ({0: (5, 2.0), 1: (-9, 1.0)}, 137),  # rank 1 was killed; rank 0 only lost it
        ({0: (5, 1.0), 1: (4, 2.0)}, 4),  # the NaN is the cause even though the peer loss came first
        ({0: (5, 1.0)}, 5),
        ({0: (2, 3.0), 1: (3, 1.0)}, 3),  # the earliest real failure
        ({}, 1),
    ],
)
def test_the_pod_exits_with_the_code_of_the_worker_that_failed_first(
    failures: dict[int, tuple[int, float]], code: int
) -> None:
    assert exit_code(failures) == code


def test_node_rank_comes_from_the_indexed_job() -> None:
    assert torchrun_args(["--nnodes", "2"], {"JOB_COMPLETION_INDEX": "1"}) == [
        "--node-rank",
        "1",
        "--nnodes",
        "2",
    ]
    assert torchrun_args(["--node-rank=0"], {"JOB_COMPLETION_INDEX": "1"}) == ["--node-rank=0"]
    assert torchrun_args(["--nnodes", "2"], {}) == ["--nnodes", "2"]


# --- real ranks -----------------------------------------------------------------------------------------------


def launch_cmd(out: Path, *extra: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.launch",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
        "-m",
        "trainer",
        "run",
        SAMPLE,
        "--output",
        str(out),
        *ARGS,
        *extra,
    ]


def launch(out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launch_cmd(out, *extra), capture_output=True, text=True, timeout=timeout, env=trainer_env(), cwd=ROOT
    )


def popen_launch(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        launch_cmd(out, *extra),
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=trainer_env(),
        start_new_session=True,
    )


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (torchrun's workers of the launcher), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def interrupted(out: Path, stop: Callable[[subprocess.Popen[str]], None]) -> tuple[int, str]:
    """Start 2 ranks, ``stop`` them once epoch 1 is done (inside epoch 2); the launcher's exit code and output."""
    proc = popen_launch(out, "--epochs", EPOCHS)
    wait_for_epoch(proc, 1)
    time.sleep(0.3)  # into epoch 2
    stop(proc)
    text, _ = proc.communicate(timeout=120)
    return proc.returncode, text


def rerun_matches(out: Path, reference: Path) -> None:
    """The same 2-rank command again resumes from ``out``'s checkpoint and ends bit for bit at ``reference``."""
    again = launch(out, "--epochs", EPOCHS)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert any(e.get("event") == "resume" for e in events(again.stdout + again.stderr))
    assert_same_weights(final_weights(out / "last.pt"), final_weights(reference / "last.pt"))


def sigterm(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks


def kill_rank_1(proc: subprocess.Popen[str]) -> None:
    workers = sorted(children(proc.pid))
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = launch(out, "--epochs", EPOCHS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_two_ranks_match_one_process_and_only_rank_0_speaks(
    two_ranks: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out2, proc2 = two_ranks
    out1 = tmp_path / "one"
    proc1 = run_trainer("run", SAMPLE, "--output", str(out1), *ARGS, "--epochs", EPOCHS)
    assert proc1.returncode == 0, proc1.stderr
    one, two = final_weights(out1 / "last.pt"), final_weights(out2 / "last.pt")
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < ATOL, f"max |one process - two ranks| = {worst:.3g}"
    print(f"max |one process - two ranks| after {EPOCHS} epochs: {worst:.3g}")
    # One summary and one line per epoch: rank 1 printed nothing (torchrun merges both ranks' output).
    lines = events(proc2.stdout + proc2.stderr)
    assert [e["epoch"] for e in lines if e.get("event") == "epoch"] == [1, 2, 3]
    summaries = [e for e in lines if e.get("event") == "summary"]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2
    assert sorted(p.name for p in (out2 / "checkpoints").glob("*.pt"))  # rank 0 wrote them


@pytest.mark.slow
def test_sigterm_stops_every_rank_with_one_checkpoint_and_the_rerun_matches(
    two_ranks: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    reference, _ = two_ranks
    out = tmp_path / "run"
    code, text = interrupted(out, sigterm)
    assert code == exitcodes.PREEMPTED, text[-3000:]
    stopped = [e for e in events(text) if e.get("event") == "preempted"]
    assert len(stopped) == 1, text[-3000:]  # rank 0 alone names the checkpoint
    rerun_matches(out, reference)


@pytest.mark.slow
def test_a_killed_rank_fails_the_launch_with_its_code_and_the_rerun_matches(
    two_ranks: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    reference, _ = two_ranks
    out = tmp_path / "run"
    code, text = interrupted(out, kill_rank_1)
    assert code == 128 + signal.SIGKILL, text[-3000:]  # the killed rank, not its peer's 5
    rerun_matches(out, reference)


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_on_one_process(
    two_ranks: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    reference, _ = two_ranks
    out = tmp_path / "run"
    code, text = interrupted(out, sigterm)
    assert code == exitcodes.PREEMPTED, text[-3000:]
    one = run_trainer("run", SAMPLE, "--output", str(out), *ARGS, "--epochs", EPOCHS)
    assert one.returncode == 0, one.stderr[-3000:]
    assert any(e.get("event") == "resume" for e in events(one.stderr))
    a, b = final_weights(out / "last.pt"), final_weights(reference / "last.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < ATOL
