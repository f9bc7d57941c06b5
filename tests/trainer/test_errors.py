"""One exception hierarchy decides the exit code: a test per code, the table has no overlaps, a bug is exit 1
with a traceback (never "invalid input"), and the final line is JSON when not in a terminal."""

from __future__ import annotations

import inspect
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.trainer_helpers import SAMPLE, TINY, run_trainer
from trainer import cli
from trainer.api import errors, exitcodes
from trainer.api.errors import ConfigError, InputError, NaNLoss, Preempted, StorageUnavailable, TrainerError
from trainer.api.exitcodes import ExitCode


def trainer_exception_classes() -> list[type[BaseException]]:
    """Every exception class the trainer's modules define."""
    import trainer.api.manifest
    import trainer.api.spec
    import trainer.candles
    import trainer.checkpoint
    import trainer.checkpoint_read
    import trainer.device
    import trainer.distributed
    import trainer.evaluate
    import trainer.launch
    import trainer.loop
    import trainer.storage
    import trainer.walkforward

    modules = [
        errors,
        trainer.candles,
        trainer.checkpoint,
        trainer.checkpoint_read,
        trainer.device,
        trainer.evaluate,
        trainer.api.manifest,
        trainer.api.spec,
        trainer.storage,
        trainer.loop,
        trainer.walkforward,
        trainer.distributed,
        trainer.launch,
    ]
    found = {
        obj
        for m in modules
        for _, obj in inspect.getmembers(m, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith("trainer.")
    }
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def codes_matching(cls: type[BaseException]) -> set[ExitCode]:
    return {code for row, code in cli.exit_code_table() if issubclass(cls, row)}


def test_exit_codes_are_an_int_enum_with_plain_int_aliases() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 143]
    for code in ExitCode:
        alias = getattr(exitcodes, code.name)
        assert alias == code and type(alias) is int  # YAML/JSON/Kubernetes clients serialise plain ints


def test_no_class_falls_into_two_categories() -> None:
    """The accident of issue 9: an unsafe pickle was a StorageError and exited 3. Every class of the trainer
    now matches rows of one code only, and a TrainerError's own ``exit_code`` is that code."""
    classes = trainer_exception_classes()
    assert len(classes) > 15
    for cls in classes:
        codes = codes_matching(cls)
        assert len(codes) <= 1, f"{cls.__qualname__} matches {codes}"
        if issubclass(cls, TrainerError) and cls is not TrainerError and codes:
            assert codes == {cls.exit_code}, cls


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("trainer.api.manifest.SpecError", 2),
        ("trainer.api.errors.UsageError", 2),
        ("trainer.api.errors.DeviceUnavailable", 2),
        ("trainer.storage.MalformedURIError", 2),
        ("trainer.storage.InvalidEndpointError", 2),
        ("trainer.candles.DataError", 2),
        ("trainer.checkpoint_read.UnsafeCheckpointError", 2),
        ("trainer.checkpoint_read.IncompatibleCheckpointError", 2),
        ("trainer.checkpoint_read.CheckpointIntegrityError", 2),
        ("trainer.checkpoint_read.NoValidCheckpointError", 2),
        ("trainer.evaluate.EvaluationError", 2),
        ("trainer.storage.StorageError", 3),
        ("trainer.storage.CredentialsError", 3),
        ("trainer.storage.BucketNotFoundError", 3),
        ("trainer.storage.AccessDeniedError", 3),
        ("trainer.storage.StorageUnavailableError", 3),
        ("trainer.storage.ObjectNotFoundError", 3),
        ("trainer.checkpoint.UploadDeadlineError", 3),
        ("trainer.checkpoint.FlushTimeoutError", 3),
        ("trainer.api.errors.NaNLoss", 4),
        ("trainer.api.errors.Preempted", 143),
    ],
)
def test_each_error_class_has_its_documented_code(name: str, code: int) -> None:
    module, _, attr = name.rpartition(".")
    cls = getattr(__import__(module, fromlist=[attr]), attr)
    assert codes_matching(cls) == {code}


def test_walk_forward_refit_every_is_a_spec_error() -> None:
    from trainer.walkforward import SpecError, parse_days

    with pytest.raises(SpecError) as err:
        parse_days("ninety")
    assert cli.exit_code_of(err.value) == 2


def test_a_plain_value_error_is_a_bug_not_invalid_input() -> None:
    for exc in (ValueError("x"), KeyError("config"), RuntimeError("x"), IndexError("x"), OSError("x")):
        assert cli.exit_code_of(exc) is None


def test_spec_error_survives_pickling() -> None:
    """Walk-forward trains folds in worker processes: their errors cross a pickle."""
    from trainer.api.manifest import SpecError

    err = pickle.loads(pickle.dumps(SpecError("--refit-every", ["'x': expected a number of days"])))
    assert isinstance(err, SpecError) and err.problems == ["'x': expected a number of days"]


# --- main(): one line per error, JSON when not in a terminal --------------------------------------------------


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raise_: Callable[[], Any],
    *,
    terminal: bool = False,
    argv: list[str] | None = None,
) -> tuple[int, str]:
    def boom(_args: Any) -> int:
        raise_()
        return 0

    monkeypatch.setattr(cli, "_cmd_train", boom)
    monkeypatch.setattr(cli, "_cmd_eval", boom)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    code = cli.main(argv or ["train", "--epochs", "1"])
    return code, capsys.readouterr().err


def _raise(exc: BaseException) -> Callable[[], Any]:
    def go() -> Any:
        raise exc

    return go


@pytest.mark.parametrize(
    ("exc", "code", "event", "message"),
    [
        (ConfigError("--x: bad"), 2, "error", "--x: bad"),
        (InputError("f.csv: row 3: bad"), 2, "error", "f.csv: row 3: bad"),
        (StorageUnavailable("cannot reach S3 endpoint http://h:1"), 3, "error", "storage: cannot reach"),
        (NaNLoss("loss became nan at epoch 3"), 4, "error", "loss became nan"),
        (Preempted("stopped by signal"), 143, "stopped", "stopped by signal"),
    ],
    ids=["exit-2-config", "exit-2-input", "exit-3-storage", "exit-4-nan", "exit-143-preempted"],
)
def test_one_json_line_per_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    event: str,
    message: str,
) -> None:
    got, err = run_main(monkeypatch, capsys, _raise(exc))
    [line] = err.splitlines()
    obj = json.loads(line)
    assert got == code and obj["code"] == code and obj["event"] == event
    assert obj["message"].startswith(message) and set(obj) == {"event", "code", "message"}


def test_nan_loss_and_preemption_keep_their_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.loop import StopFlag

    got, err = run_main(monkeypatch, capsys, _raise(NaNLoss("loss became nan")))
    assert got == 4 and json.loads(err)["message"] == "loss became nan"
    got, err = run_main(monkeypatch, capsys, _raise(StopFlag().preempted()))
    assert got == 143 and json.loads(err) == {"event": "stopped", "code": 143, "message": "stopped by signal"}


def test_terminal_gets_plain_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.candles import DataError

    got, err = run_main(monkeypatch, capsys, _raise(DataError("f.csv: row 3: close is inf")), terminal=True)
    assert got == 2 and err == "error: data: f.csv: row 3: close is inf\n"
    got, err = run_main(monkeypatch, capsys, _raise(Preempted("stopped by signal")), terminal=True)
    assert got == 143 and err == "stopped: stopped by signal\n"
    got, err = run_main(
        monkeypatch,
        capsys,
        _raise(ConfigError("x")),
        terminal=True,
        argv=["train", "--json", "--epochs", "1"],
    )
    assert json.loads(err)["code"] == 2  # --json: JSON even in a terminal


def test_exit_1_a_bug_is_a_traceback_in_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No blanket ``except ValueError -> 2``: a library's ValueError propagates (Python prints the traceback
    and exits 1, which the Job retries)."""
    with pytest.raises(ValueError, match="a library bug"):
        run_main(monkeypatch, capsys, _raise(ValueError("a library bug")), terminal=True)


def test_exit_1_a_bug_is_one_json_line_with_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got, err = run_main(monkeypatch, capsys, _raise(ValueError("a library bug")))
    [line] = err.splitlines()
    obj = json.loads(line)
    assert got == 1 and obj["code"] == 1 and obj["event"] == "error"
    assert obj["message"] == "unexpected ValueError: a library bug"
    assert obj["traceback"].startswith("Traceback") and "a library bug" in obj["traceback"]


def test_usage_errors_are_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert cli.main(["train", "--device", "tpu"]) == 2
    obj = json.loads(capsys.readouterr().err)
    assert "--device" in obj["message"] and "'tpu'" in obj["message"] and "'cuda'" in obj["message"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(["train", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and err.splitlines()[-1].startswith("error: ")
    assert "--no-such-flag" in err


# --- the codes as a real process exits with them -------------------------------------------------------------


def _all_json(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # raises if any line is not JSON


def test_exit_2_process_bad_spec(tmp_path: Path) -> None:
    proc = run_trainer("run", SAMPLE, "--set", "training.epochs=0", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    [final] = _all_json(proc.stderr)
    assert final["event"] == "error" and final["code"] == 2
    assert "spec.training.epochs: Input should be greater than or equal to 1 (got 0)" in final["message"]


def test_exit_3_process_storage_unreachable() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_trainer(
        "run",
        SAMPLE,
        *TINY,
        "--output",
        "s3://bucket/run",
        "--s3-endpoint",
        f"http://127.0.0.1:{port}",
        env={"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret-value", "AWS_MAX_ATTEMPTS": "1"},
        timeout=180,
    )
    assert proc.returncode == 3, proc.stderr
    [final] = _all_json(proc.stderr)
    assert final["code"] == 3 and f"127.0.0.1:{port}" in final["message"]
    assert "secret-value" not in proc.stderr + proc.stdout


def test_exit_1_process_bug_has_a_traceback() -> None:
    """A real process: an unexpected exception is exit 1 (a Job retries it), with its traceback."""
    import subprocess

    from tests.support.trainer_helpers import ROOT, trainer_env

    script = (
        "import sys, trainer.cli as c\n"
        "def boom(args): raise KeyError('config')\n"
        "c._cmd_eval = boom\n"
        "sys.exit(c.main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "predict", "--checkpoint", "s3://bucket/run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=trainer_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 1
    [final] = _all_json(proc.stderr)
    assert final["code"] == 1 and "KeyError" in final["traceback"]
