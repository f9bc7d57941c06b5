"""API errors -> kopf's Temporary/Permanent errors, and the raw paths the handlers use."""

from __future__ import annotations

import json

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from trainop.kube import object_path, path, run_path, to_kopf_error


def api_error(status: int, message: str = "nope") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


@pytest.mark.parametrize("status", [400, 422])
def test_rejected_objects_are_permanent(status: int) -> None:
    error = to_kopf_error(api_error(status, 'Job.batch "x" is invalid'), "creating Job x")
    assert isinstance(error, kopf.PermanentError) and "is invalid" in str(error)


@pytest.mark.parametrize("status", [403, 404, 409, 429, 500, 503])
def test_everything_else_is_retried(status: int) -> None:
    error = to_kopf_error(api_error(status, "exceeded quota"), "creating Job x")
    assert isinstance(error, kopf.TemporaryError) and not isinstance(error, kopf.PermanentError)
    assert error.delay == (30 if status == 429 else 10)


def test_connection_errors_are_retried() -> None:
    assert isinstance(to_kopf_error(ConnectionRefusedError("refused"), "x"), kopf.TemporaryError)


def test_paths() -> None:
    assert path("v1", "pods", "ml", "p") == "/api/v1/namespaces/ml/pods/p"
    assert path("batch/v1", "jobs", "ml") == "/apis/batch/v1/namespaces/ml/jobs"
    assert (
        run_path("ml", "sol", "status")
        == "/apis/cryptopredictor.dev/v1alpha1/namespaces/ml/trainingruns/sol/status"
    )
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ml"}}
    assert object_path(job) == "/apis/batch/v1/namespaces/ml/jobs/j"
    assert object_path(job, with_name=False) == "/apis/batch/v1/namespaces/ml/jobs"
