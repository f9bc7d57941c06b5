"""The client's API side (trainop.client_kube) without a cluster: kubectl's kubeconfig rules, log lines from a
stream's chunks, API errors as one line, and the run label the operator puts on pods."""

from __future__ import annotations

import json
import pathlib

from kubernetes.client.exceptions import ApiException
from trainop import builders
from trainop.client_kube import RUN_LABEL, api_error, kubeconfig_path, lines


def test_the_run_label_is_the_operators() -> None:
    assert RUN_LABEL == builders.RUN_LABEL


def test_kubeconfig_rules(tmp_path: pathlib.Path) -> None:
    home, present = tmp_path / "home", tmp_path / "a.yaml"
    present.write_text("{}")
    missing = str(tmp_path / "missing.yaml")
    assert kubeconfig_path("flag.yaml", {"KUBECONFIG": str(present)}, home) == "flag.yaml"
    assert kubeconfig_path(None, {"KUBECONFIG": f"{missing}:{present}"}, home) == f"{missing}:{present}"
    assert kubeconfig_path(None, {"KUBECONFIG": missing}, home) is None  # nothing there: in-cluster, if any
    assert kubeconfig_path(None, {}, home) is None
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("{}")
    assert kubeconfig_path(None, {}, home) == str(home / ".kube" / "config")


def test_lines_from_chunks() -> None:
    chunks = [b'{"event": "ep', b'och"}\nsecond\n\nthi', "rd é".encode(), b"\xff"]
    assert list(lines(chunks)) == ['{"event": "epoch"}', "second", "", "third é\ufffd"]
    assert list(lines([])) == []


def test_api_error_lines() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"message": 'pods "x" is forbidden: User "u" cannot get resource "pods/log"'})
    assert api_error(exc) == (
        'the API server answered 403: pods "x" is forbidden: User "u" cannot get resource "pods/log"'
    )
    assert api_error(ConnectionRefusedError("refused")) == (
        "cannot reach the Kubernetes API: ConnectionRefusedError: refused"
    )
