"""``pvc://CLAIM/path`` in trainer.storage: the directory ``$TRAINER_PVC_ROOT/CLAIM/path``, reported by its URI
(never the mount path), and the errors when no claim is mounted or the URI is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.api.exitcodes import INVALID_CONFIG
from trainer.checkpoint import CheckpointStore, resolve_resume
from trainer.cli import exit_code_of, main
from trainer.storage import (
    PVC_ROOT_ENV,
    MalformedURIError,
    PVCNotMountedError,
    PVCStorage,
    StorageError,
    parse_uri,
    read_bytes,
    storage_for,
    write_bytes,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pvc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pvc"
    monkeypatch.setenv(PVC_ROOT_ENV, str(root))
    return root


def state(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "model": {"w": torch.full((2, 2), float(epoch))}}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pvc://sol-tft-checkpoints/sol-tft", ("pvc", "sol-tft-checkpoints", "sol-tft")),
        ("pvc://c/a//b/", ("pvc", "c", "a/b")),
        ("pvc://c", ("pvc", "c", "")),
        ("pvc://0c/", ("pvc", "0c", "")),  # a claim may start with a digit (DNS-1123 label)
    ],
)
def test_parse_pvc_uri(uri: str, expected: tuple[str, str, str]) -> None:
    p = parse_uri(uri)
    assert (p.scheme, p.bucket, p.key) == expected


@pytest.mark.parametrize(
    ("uri", "phrase"),
    [
        ("pvc://Claim/x", "lower-case DNS label"),
        ("pvc://-c/x", "lower-case DNS label"),
        ("pvc://" + "c" * 64, "at most 63"),
        ("pvc:/c/x", "expected pvc://CLAIM[/path]"),
        ("pvc://c/../other", "'..' are not allowed"),
        ("pvc://c/./x", "'..' are not allowed"),
    ],
)
def test_malformed_pvc_uri_is_a_config_error(uri: str, phrase: str) -> None:
    with pytest.raises(MalformedURIError) as info:
        parse_uri(uri)
    assert phrase in str(info.value) and uri in str(info.value)
    assert exit_code_of(info.value) == INVALID_CONFIG


def test_pvc_storage_is_a_directory_under_the_root_named_by_its_uri(pvc_root: Path) -> None:
    store = storage_for("pvc://ckpt/runs/sol/")
    assert isinstance(store, PVCStorage) and store.root == pvc_root / "ckpt" / "runs" / "sol"
    assert store.root_uri == "pvc://ckpt/runs/sol"
    assert store.uri_for("checkpoints/epoch-000001.pt") == "pvc://ckpt/runs/sol/checkpoints/epoch-000001.pt"
    store.check()
    store.put("a/b.json", b"{}")
    assert (pvc_root / "ckpt" / "runs" / "sol" / "a" / "b.json").read_bytes() == b"{}"
    assert store.list() == ["a/b.json"]
    whole = storage_for("pvc://ckpt")
    assert whole.root_uri == "pvc://ckpt" and whole.uri_for("x") == "pvc://ckpt/x"
    write_bytes("pvc://ckpt/data/candles.csv", b"date,close\n")
    assert read_bytes("pvc://ckpt/data/candles.csv") == b"date,close\n"
    with pytest.raises(StorageError, match=r"pvc://ckpt/runs/sol/missing does not exist"):
        store.get("missing")


def test_pvc_without_a_mount_is_a_config_error_naming_the_field_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PVC_ROOT_ENV, raising=False)
    with pytest.raises(PVCNotMountedError) as info:
        storage_for("pvc://ckpt/sol")
    message = str(info.value)
    assert message.startswith("pvc://ckpt/sol: checkpoint.uri pvc://")
    assert "the operator mounts" in message and f"set {PVC_ROOT_ENV} to a directory" in message
    assert exit_code_of(info.value) == INVALID_CONFIG  # a retry cannot mount a claim: the Job fails at once


def test_run_on_pvc_without_a_mount_exits_2_before_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PVC_ROOT_ENV, raising=False)
    sample = str(REPO / "manifests" / "samples" / "sol-run.yaml")
    assert main(["run", sample, "--output", "pvc://ckpt/sol", "--json"]) == INVALID_CONFIG
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "error" and "TRAINER_PVC_ROOT" in line["message"]


def test_unwritable_claim_names_the_uri_and_the_mount(pvc_root: Path) -> None:
    pvc_root.mkdir()
    (pvc_root / "ckpt").write_text("a file where the claim's directory should be")
    with pytest.raises(StorageError) as info:
        storage_for("pvc://ckpt/sol").check()
    assert f"pvc://ckpt/sol (mounted at {pvc_root / 'ckpt' / 'sol'})" in str(info.value)


def test_checkpoints_on_a_claim_resume_and_report_pvc_uris(pvc_root: Path) -> None:
    """What a retried pod does: a new store on the same claim resumes from the newest checkpoint; every URI
    (stored, latest.json's reader, the resumed checkpoint) is pvc://, and latest.json keeps relative keys."""
    with CheckpointStore("pvc://ckpt/sol") as store:
        store.check()
        for epoch in (1, 2):
            store.save(epoch, state(epoch), is_best=epoch == 1)
            store.flush(30)
        stored = store.stored
    assert stored is not None and stored.latest == "pvc://ckpt/sol/checkpoints/epoch-000002.pt"
    assert stored.best == "pvc://ckpt/sol/best.pt"
    latest = json.loads((pvc_root / "ckpt" / "sol" / "latest.json").read_text())
    assert latest["key"] == "checkpoints/epoch-000002.pt"
    assert str(pvc_root) not in json.dumps(latest)

    retry = CheckpointStore("pvc://ckpt/sol")
    loaded = resolve_resume(retry, "auto")
    assert loaded is not None and loaded.epoch == 2
    assert loaded.uri == "pvc://ckpt/sol/checkpoints/epoch-000002.pt"
    # An explicit checkpoint on the claim, from a store elsewhere (resume: pvc://... of another run).
    other = CheckpointStore("pvc://other/run")
    explicit = resolve_resume(other, "pvc://ckpt/sol/checkpoints/epoch-000001.pt")
    assert explicit is not None and explicit.epoch == 1 and explicit.uri.startswith("pvc://ckpt/sol/")
    assert torch.equal(explicit.state["model"]["w"], torch.full((2, 2), 1.0))
