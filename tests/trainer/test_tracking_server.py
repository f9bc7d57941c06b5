"""Tracking against a real ``mlflow server`` (SQLite backend, artefacts through the server): a tiny run that is
stopped by SIGTERM after its first epoch and resumed logs all its epochs, params, tags, final metrics and the
artefacts the checkpoint store got into ONE MLflow run; and a run whose tracking server is not there trains to the
end with one warning line and no more than a bounded wait."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflowserver import MlflowServer, mlflow_server  # noqa: F401 - the session fixture
from tests.support.trainer_helpers import SAMPLE, TINY, events, popen_trainer, run_trainer
from trainer import cli
from trainer.api import exitcodes
from trainer.tracking import Tracker

pytestmark = pytest.mark.slow

EPOCHS = 3
SHORT = [*TINY, "--epochs", str(EPOCHS), "--set", "data.start='2023-01-01'", "--json"]
ARTEFACTS = ("metrics.json", "forecast.png", "importance.png")


@pytest.fixture(scope="module")
def resumed(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """One training stopped by SIGTERM after epoch 1 (exit 143, a checkpoint), then run again to the end."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    experiment = f"test-{uuid.uuid4().hex[:8]}"
    uid = str(uuid.uuid4())
    args = ["run", SAMPLE, "--output", str(out), *SHORT, "--mlflow-uri", mlflow_server.uri]
    env = {"TRAININGRUN_UID": uid, "TRAININGRUN_NAMESPACE": "ml", "MLFLOW_EXPERIMENT_NAME": experiment}
    first = popen_trainer(*args, env=env)
    seen = read_until(
        first, lambda evs: any(e["event"] == "epoch" for e in evs) and any(opened(e) for e in evs)
    )
    first.send_signal(signal.SIGTERM)
    rest, _ = first.communicate(timeout=120)
    assert first.returncode == exitcodes.PREEMPTED, "".join(seen) + rest
    again = run_trainer(*args, env=env)
    assert again.returncode == 0, again.stderr
    client = mlflow_server.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return {
        "out": out,
        "uid": uid,
        "client": client,
        "runs": runs,
        "first": events("".join(seen) + rest),
        "again": events(again.stderr),
    }


def opened(event: dict[str, Any]) -> bool:
    return "MLflow tracking: logging to run" in str(event.get("message"))


def read_until(proc: subprocess.Popen[str], done: Callable[[list[dict[str, Any]]], bool]) -> list[str]:
    """The trainer's lines until its events so far satisfy ``done`` (the run opened, an epoch ended)."""
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if done(events("".join(lines))):
            return lines
    raise AssertionError("the trainer never opened its MLflow run and ended an epoch:\n" + "".join(lines))


def test_a_resumed_run_is_one_mlflow_run_with_every_epoch(resumed: dict[str, Any]) -> None:
    first_epochs = [e["epoch"] for e in resumed["first"] if e["event"] == "epoch"]
    again_epochs = [e["epoch"] for e in resumed["again"] if e["event"] == "epoch"]
    assert 1 <= len(first_epochs) < EPOCHS  # stopped mid-way
    assert first_epochs + again_epochs == list(range(1, EPOCHS + 1))
    [run] = resumed["runs"]
    assert run.info.status == "FINISHED"
    client = resumed["client"]
    for key in ("train_loss", "val_loss", "val_mase", "samples_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
    by_epoch = {e["epoch"]: e for e in resumed["first"] + resumed["again"] if e["event"] == "epoch"}
    for m in client.get_metric_history(run.info.run_id, "val_loss"):
        assert m.value == pytest.approx(by_epoch[m.step]["val_loss"], rel=1e-4)
    # Both processes name the same run; the second continues it.
    logged = [
        e["message"]
        for e in resumed["first"] + resumed["again"]
        if "MLflow tracking:" in e.get("message", "")
    ]
    assert len(logged) == 2 and all(run.info.run_id in m for m in logged) and "continuing" in logged[1]


def test_params_tags_and_final_metrics(resumed: dict[str, Any]) -> None:
    [run] = resumed["runs"]
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert (
        params["symbol"] == "SOL" and params["model.hiddenSize"] == "8" and params["training.epochs"] == "3"
    )
    assert params["data.start"] == "2023-01-01" and params["model.quantiles"] == "[0.1, 0.5, 0.9]"
    assert tags["trainingrun.uid"] == resumed["uid"] and tags["trainingrun.namespace"] == "ml"
    assert (
        tags["checkpoint.uri"] == str(resumed["out"]) and tags["trainer.run-key"] == f"uid:{resumed['uid']}"
    )
    assert tags["resumed"] == "true" and tags["median"] in ("learned", "persistence")
    summary = json.loads((resumed["out"] / "metrics.json").read_text())
    assert metrics["valMase"] == pytest.approx(summary["metrics"]["mase"])
    for key in (
        "valMae",
        "valLoss",
        "coverage80",
        "pinball",
        "garchPinball",
        "ewmaPinball",
        "empiricalPinball",
    ):
        assert key in metrics, key
    assert metrics["bestEpoch"] == summary["best_epoch"]


def test_artefacts_are_the_bytes_the_store_got(resumed: dict[str, Any], tmp_path: Path) -> None:
    [run] = resumed["runs"]
    local = Path(resumed["client"].download_artifacts(run.info.run_id, "", str(tmp_path)))
    assert sorted(p.name for p in local.iterdir()) == sorted(ARTEFACTS)
    for name in ARTEFACTS:
        assert (local / name).read_bytes() == (resumed["out"] / name).read_bytes(), name
    assert (local / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(monkeypatch: pytest.MonkeyPatch, name: str) -> list[float]:
    """Wrap ``Tracker.<name>`` to record how long each call took."""
    took: list[float] = []
    real: Callable[..., Any] = getattr(Tracker, name)

    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(self, *args, **kwargs)
        finally:
            took.append(time.perf_counter() - t0)

    monkeypatch.setattr(Tracker, name, wrapper)
    return took


def test_an_unreachable_server_never_stops_or_slows_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (the CLI's main), so that the tracker's calls can be timed: the epoch loop's never wait, the end
    waits one refused connection, and the one problem is one warning line."""
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(key, raising=False)  # the tracker sets defaults: give them back after the test
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    epoch_calls, closes = timed(monkeypatch, "epoch"), timed(monkeypatch, "close")
    uri = f"http://127.0.0.1:{closed_port()}"
    out = tmp_path / "run"
    code = cli.main(["run", SAMPLE, "--output", str(out), *SHORT, "--epochs", "2", "--mlflow-uri", uri])
    captured = capsys.readouterr()
    assert code == exitcodes.OK, captured.err
    assert (out / "forecast.png").is_file()
    lines = captured.err.splitlines()
    assert all(line.startswith("{") for line in lines), lines  # nothing from the MLflow client's own logging
    evs = events(captured.err)
    assert [e["epoch"] for e in evs if e["event"] == "epoch"] == [1, 2]
    [warning] = [e for e in evs if e["event"] == "warning"]
    assert (
        f"MLflow tracking at {uri} unreachable" in warning["message"]
        and "training continues" in warning["message"]
    )
    assert len(epoch_calls) == 2 and max(epoch_calls) < 0.05
    assert len(closes) == 1 and closes[0] < 5.0
