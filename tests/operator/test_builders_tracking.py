"""spec.tracking.mlflow in the trainer's Job: the credentials Secret becomes the MLflow client's environment
(references only, never values), and the tracking spec reaches the trainer in its manifest.

Regenerate the golden file only on purpose: ``UPDATE_GOLDEN=1 pytest tests/operator/test_builders_tracking.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from trainop.settings import Settings

from tests.operator.test_builders import SETTINGS, check_golden, env_of, job_of, run_of
from trainer.api.manifest import SpecError

TRACKED = {
    "tracking": {
        "mlflow": {
            "uri": "https://mlflow.example:5000",
            "experiment": "sol",
            "credentialsSecret": {"name": "mlflow-auth", "usernameKey": "user", "passwordKey": "token"},
        }
    }
}


def container_env(job: dict[str, Any]) -> list[dict[str, Any]]:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return [e for e in env if e["name"] != "TRAININGRUN_MANIFEST"]


def test_tracking_env_golden() -> None:
    check_golden("env-tracking.yaml", container_env(job_of(run_of(TRACKED), SETTINGS)))


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (
            {"name": "mlflow-auth", "usernameKey": "user", "passwordKey": "token"},
            {
                "MLFLOW_TRACKING_USERNAME": ("mlflow-auth", "user"),
                "MLFLOW_TRACKING_PASSWORD": ("mlflow-auth", "token"),
            },
        ),
        (
            {"name": "mlflow-auth"},
            {
                "MLFLOW_TRACKING_USERNAME": ("mlflow-auth", "MLFLOW_TRACKING_USERNAME"),
                "MLFLOW_TRACKING_PASSWORD": ("mlflow-auth", "MLFLOW_TRACKING_PASSWORD"),
            },
        ),
        (None, {}),
    ],
    ids=["own-keys", "default-keys", "no-secret"],
)
def test_credentials_secret_maps_to_mlflow_env(
    secret: dict[str, str] | None, expected: dict[str, Any]
) -> None:
    mlflow: dict[str, Any] = {"uri": "http://mlflow.mlflow:5000"}
    if secret is not None:
        mlflow["credentialsSecret"] = secret
    env = env_of(job_of(run_of({"tracking": {"mlflow": mlflow}}), SETTINGS))
    got = {
        name: (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        for name, ref in env.items()
        if name.startswith("MLFLOW_")
    }
    assert got == expected
    manifest = json.loads(env["TRAININGRUN_MANIFEST"])
    assert manifest["spec"]["tracking"]["mlflow"]["uri"] == "http://mlflow.mlflow:5000"


def test_untracked_run_has_no_mlflow_env() -> None:
    env = env_of(job_of(run_of(), Settings(checkpoint_prefix="s3://bkt/p")))
    assert not [name for name in env if name.startswith("MLFLOW_")]
    assert "tracking" not in json.loads(env["TRAININGRUN_MANIFEST"])["spec"]


def test_credentials_in_the_uri_are_refused_without_echoing_them() -> None:
    body = run_of({"tracking": {"mlflow": {"uri": "http://alice:s3cret@mlflow:5000"}}})
    with pytest.raises(SpecError) as err:
        job_of(body, SETTINGS)
    assert "spec.tracking.mlflow.uri" in str(err.value) and "credentialsSecret" in str(err.value)
    assert "s3cret" not in str(err.value)
