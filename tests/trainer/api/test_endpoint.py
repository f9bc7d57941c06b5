"""``trainer.api.endpoint.resolve_s3_endpoint``: the one S3 endpoint precedence of the trainer and the operator."""

from __future__ import annotations

import pytest

from trainer.api.endpoint import S3Endpoint, resolve_s3_endpoint

F, S, D = "http://flag:1", "http://spec:2", "http://default:3"
ENV_S3, ENV = "http://env-s3:4", "http://env:5"
BOTH = {"AWS_ENDPOINT_URL_S3": ENV_S3, "AWS_ENDPOINT_URL": ENV}


@pytest.mark.parametrize(
    ("flag", "spec", "env", "default", "expected"),
    [
        # flag > spec.checkpoint.s3Endpoint > $AWS_ENDPOINT_URL_S3 > $AWS_ENDPOINT_URL > default > AWS
        (F, S, BOTH, D, S3Endpoint(F, "S3 endpoint")),
        (None, S, BOTH, D, S3Endpoint(S, "S3 endpoint")),
        ("", S, BOTH, D, S3Endpoint(S, "S3 endpoint")),
        (None, None, BOTH, D, S3Endpoint(ENV_S3, "$AWS_ENDPOINT_URL_S3")),
        (
            None,
            None,
            {"AWS_ENDPOINT_URL_S3": "", "AWS_ENDPOINT_URL": ENV},
            D,
            S3Endpoint(ENV, "$AWS_ENDPOINT_URL"),
        ),
        (None, None, {"AWS_ENDPOINT_URL": ENV}, None, S3Endpoint(ENV, "$AWS_ENDPOINT_URL")),
        (None, "", {}, D, S3Endpoint(D, "default")),
        (None, None, None, D, S3Endpoint(D, "default")),
        (None, None, {"AWS_ENDPOINT_URL": ""}, None, None),
        (None, None, None, None, None),
    ],
)
def test_precedence(
    flag: str | None,
    spec: str | None,
    env: dict[str, str] | None,
    default: str | None,
    expected: S3Endpoint | None,
) -> None:
    assert resolve_s3_endpoint(flag=flag, spec=spec, env=env, default=default) == expected


def test_operator_uses_it_without_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator passes no env: its own $AWS_ENDPOINT_URL is not the run's (TRAINOP_S3_ENDPOINT is)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", ENV)
    assert resolve_s3_endpoint(spec=None, default=None) is None
    assert resolve_s3_endpoint(spec="", default=D) == S3Endpoint(D, "default")


def test_storage_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's S3 client resolves the endpoint with the same function, naming the variable it came from."""
    from trainer.storage import InvalidEndpointError
    from trainer.storage_s3 import S3Storage

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:9000")
    with pytest.raises(InvalidEndpointError, match=r"\$AWS_ENDPOINT_URL_S3"):
        S3Storage("bucket")
    assert S3Storage("bucket", endpoint="http://127.0.0.1:9").endpoint_label == "http://127.0.0.1:9"
