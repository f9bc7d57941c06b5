"""trainer.storage against local disk and a real S3 server (SeaweedFS): round trips, fail-fast errors."""

# ruff: noqa: F811  (the s3_server/s3_env fixtures are imported explicitly and used as parameters)
from __future__ import annotations

import socket
import time
import traceback
from pathlib import Path

import pytest

from tests.support.s3server import S3Server, s3_env, s3_server  # noqa: F401
from trainer.storage import (
    BucketNotFoundError,
    CredentialsError,
    LocalStorage,
    MalformedURIError,
    ObjectNotFoundError,
    StorageUnavailableError,
    parse_uri,
    read_bytes,
    storage_for,
    write_bytes,
)
from trainer.storage_s3 import S3Storage


def _all_text(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b/", ("s3", "bucket", "a/b")),
        ("s3://my.bucket-1", ("s3", "my.bucket-1", "")),
        ("runs/x", ("file", "", "runs/x")),
        ("file:///tmp/x", ("file", "", "/tmp/x")),
    ],
)
def test_parse_uri(uri: str, expected: tuple[str, str, str]) -> None:
    p = parse_uri(uri)
    assert (p.scheme, p.bucket, p.key) == expected


@pytest.mark.parametrize("uri", ["s3:/x", "s3://", "s3://A_B/x", "s3:bucket/x", ""])
def test_malformed_s3_uri(uri: str) -> None:
    with pytest.raises(MalformedURIError, match=r"malformed URI .*expected") as info:
        storage_for(uri)
    assert repr(uri) in str(info.value)


def test_malformed_uri_message_is_exact() -> None:
    with pytest.raises(MalformedURIError) as info:
        parse_uri("s3:/x")
    assert str(info.value) == "malformed URI 's3:/x': expected s3://bucket/prefix"


def test_unsupported_scheme() -> None:
    with pytest.raises(MalformedURIError, match="only local paths, s3://bucket/prefix and pvc://CLAIM/path"):
        parse_uri("gs://bucket/x")


def test_local_round_trip_is_atomic(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "root")
    st.check()
    st.put("a/b.bin", b"1" * 1000)
    st.put("a/b.bin", b"2" * 10)  # replace
    st.put("c.json", b"{}")
    assert st.get("a/b.bin") == b"2" * 10
    assert st.list() == ["a/b.bin", "c.json"]
    assert st.list("a/") == ["a/b.bin"]
    assert st.exists("c.json") and not st.exists("nope")
    # No temp files left behind by the temp+fsync+rename writes (nor the write probe).
    assert sorted(p.name for p in (tmp_path / "root").rglob("*")) == ["a", "b.bin", "c.json"]
    st.delete("c.json")
    st.delete("c.json")  # idempotent
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        st.get("c.json")


def test_local_read_write_bytes(tmp_path: Path) -> None:
    write_bytes(str(tmp_path / "d" / "x.csv"), b"date,close\n")
    assert read_bytes(str(tmp_path / "d" / "x.csv")) == b"date,close\n"
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "missing.csv"))


def test_s3_round_trip_via_env_endpoint(s3_env: S3Server) -> None:
    bucket = s3_env.create_bucket()
    st = storage_for(f"s3://{bucket}/runs/one")  # endpoint from AWS_ENDPOINT_URL, creds from the env
    assert isinstance(st, S3Storage)
    st.check()
    st.put("checkpoints/epoch-000001.pt", b"abc")
    st.put("latest.json", b"{}")
    assert st.get("checkpoints/epoch-000001.pt") == b"abc"
    assert st.list() == ["checkpoints/epoch-000001.pt", "latest.json"]
    assert st.list("checkpoints/") == ["checkpoints/epoch-000001.pt"]
    assert st.exists("latest.json") and not st.exists("nope.json")
    st.delete("latest.json")
    with pytest.raises(ObjectNotFoundError):
        st.get("latest.json")
    # The object really lives at bucket/prefix/key for any other S3 client.
    body = s3_env.client().get_object(Bucket=bucket, Key="runs/one/checkpoints/epoch-000001.pt")["Body"]
    assert body.read() == b"abc"


def test_s3_read_write_bytes_explicit_endpoint(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    bucket = s3_env.create_bucket()
    uri = f"s3://{bucket}/data/SOL.csv"
    write_bytes(uri, b"date,close\n2024-01-01,100\n", endpoint=s3_env.endpoint)
    assert read_bytes(uri, endpoint=s3_env.endpoint) == b"date,close\n2024-01-01,100\n"
    with pytest.raises(ObjectNotFoundError):
        read_bytes(f"s3://{bucket}/data/BTC.csv", endpoint=s3_env.endpoint)
    with pytest.raises(MalformedURIError, match="object"):
        read_bytes(f"s3://{bucket}/", endpoint=s3_env.endpoint)


def test_missing_bucket_fails_fast(s3_env: S3Server) -> None:
    st = storage_for("s3://no-such-bucket-xyz/prefix")
    with pytest.raises(BucketNotFoundError) as info:
        st.check()
    assert f"bucket 'no-such-bucket-xyz' does not exist at endpoint {s3_env.endpoint}" in str(info.value)


@pytest.mark.parametrize("which", ["secret", "key_id"])
def test_wrong_credentials_fail_fast_without_leaking(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    bucket = s3_env.create_bucket()
    wrong_secret = "WRONG-" + s3_env.secret_key[::-1]
    if which == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
        code = "SignatureDoesNotMatch"
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKNOSUCHKEY")
        code = "InvalidAccessKeyId"
    st = storage_for(f"s3://{bucket}/p")
    with pytest.raises(CredentialsError) as info:
        st.check()
    msg = str(info.value)
    assert f"S3 rejected the credentials ({code}) for endpoint {s3_env.endpoint}" in msg
    everything = _all_text(info.value) + caplog.text
    for secret in (wrong_secret, s3_env.secret_key):
        assert secret not in everything


def test_no_credentials(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="no S3 credentials found"):
        storage_for("s3://some-bucket/p").check()


def test_unreachable_endpoint_is_clear_and_quick(s3_env: S3Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: connection refused
    endpoint = f"http://127.0.0.1:{port}"
    st = S3Storage("bucket", "p", endpoint, max_attempts=2, connect_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=f"cannot reach S3 endpoint {endpoint}"):
        st.check()
    assert time.monotonic() - t0 < 10


def test_malformed_uri_is_a_config_error_not_a_storage_error() -> None:
    """A typo in a URI exits 2 (the Job fails at once), not 3 (retried)."""
    from trainer.api.errors import ConfigError
    from trainer.storage import StorageError

    with pytest.raises(MalformedURIError) as info:
        parse_uri("s3:/x")
    assert isinstance(info.value, ConfigError) and not isinstance(info.value, StorageError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://key:secret@127.0.0.1:9000", "http://***@127.0.0.1:9000"),
        ("https://token@s3.example.com/path", "https://***@s3.example.com/path"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("s3://bucket/key@v1", "s3://bucket/key@v1"),  # an @ after the host is not userinfo
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from trainer.storage import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("endpoint", "phrase"),
    [
        ("127.0.0.1:57757", "expected a URL with a scheme such as http://127.0.0.1:9000"),
        ("ftp://host", "expected a URL with a scheme"),
        ("http://", "expected a URL with a scheme"),
        ("http://key:secret@host:9000", "credentials in the URL are not used"),
    ],
)
def test_endpoint_is_checked_naming_its_source(endpoint: str, phrase: str) -> None:
    from trainer.storage import InvalidEndpointError, check_endpoint

    with pytest.raises(InvalidEndpointError) as info:
        check_endpoint(endpoint, "--s3-endpoint")
    assert str(info.value).startswith("--s3-endpoint '") and phrase in str(info.value)
    assert "secret" not in str(info.value)
    assert check_endpoint("https://s3.example.com:9443/base", "x") == "https://s3.example.com:9443/base"


def test_endpoint_with_credentials_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Formerly printed verbatim in the missing-bucket error; now refused up front, redacted."""
    from trainer.storage import InvalidEndpointError

    with pytest.raises(InvalidEndpointError) as info:
        S3Storage("bucket", "p", "http://AKIAKEY:hunter2@127.0.0.1:9000")
    text = str(info.value) + repr(info.value)  # (a traceback would show this test's own source line)
    assert "hunter2" not in text and "AKIAKEY" not in text
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://AKIAKEY:hunter2@127.0.0.1:9000")
    with pytest.raises(InvalidEndpointError, match=r"^\$AWS_ENDPOINT_URL 'http://\*\*\*@127\.0\.0\.1:9000'"):
        S3Storage("bucket", "p")


def test_local_get_of_a_directory_or_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "x.csv").write_text("x")
    st = LocalStorage(tmp_path)
    with pytest.raises(ObjectNotFoundError, match=r"dir\.pt is a directory, not a file"):
        st.get("dir.pt")
    with pytest.raises(
        ObjectNotFoundError, match=r"x\.csv/best\.pt does not exist \(a part of that path is a file"
    ):
        st.get("x.csv/best.pt")
