"""``kubeemu.k8sproto``: the protobuf bodies real kubectl sends (captured with ``kubectl -v=9``) decode to the JSON
objects a real API server would store; what the table does not know is refused, never dropped."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kubeemu import k8sproto
from tests.support.kubeemu.errors import ApiError

# kubectl v1.32 `create namespace x`, `create configmap cm1 --from-literal=a=b --from-file=bin=<ff 00 01>`,
# `create secret generic s1 --from-literal=k=v --type=Opaque`, `create serviceaccount sa1`, and `create job j1` (its spec cut off)
KUBECTL = {
    "namespace": "6b3873000a0f0a0276311209 4e616d657370616365 12190a110a01781200 1a0022002a00320038004200 12001a020a00"
    "1a002200",
    "configmap": "6b3873000a0f0a0276311209 436f6e6669674d6170 12290a130a03636d311200 1a0022002a0032003800420012060a01"
    "6112016 21a0a0a0362696e1203ff00011a002200",
    "secret": "6b3873000a0c0a0276311206 536563726574 12240a120a0273311200 1a0022002a0032003800420012060a016b120176"
    "1a064f70617175651a002200",
    "serviceaccount": "6b3873000a140a0276311 20e53657276696365416363 6f756e7412150a130a0373613112001a002200 2a0032003800"
    "42001a002200",
    "job": "6b3873000a0f0a0862617463682f7631120 34a6f62 12060a040a026a31 1a002200",
}


def body(name: str) -> bytes:
    return bytes.fromhex(KUBECTL[name].replace(" ", ""))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
        (
            "configmap",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cm1"},
                "data": {"a": "b"},
                "binaryData": {"bin": "/wAB"},
            },
        ),
        (
            "secret",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s1"},
                "data": {"k": "dg=="},
                "type": "Opaque",
            },
        ),
        ("serviceaccount", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa1"}}),
    ],
)
def test_kubectl_bodies_decode_to_json(name: str, expected: dict[str, Any]) -> None:
    assert k8sproto.decode(body(name)) == expected


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version) + _field(2, kind)
    return k8sproto.MAGIC + _field(1, type_meta) + _field(2, raw) + _field(3, "") + _field(4, "")


def _entry(key: str, value: str) -> bytes:
    return _field(1, key) + _field(2, value)


def test_object_meta_labels_annotations_finalizers_owner_references() -> None:
    owner = _field(1, "Job") + _field(3, "j") + _field(4, "u-1") + _field(5, "batch/v1") + _field(6, 1)
    meta = (
        _field(2, "gen-")
        + _field(3, "ns1")
        + _field(5, "ignored-uid")  # server-set: ignored as on a real API server
        + _field(7, 3)
        + _field(11, _entry("app", "demo"))
        + _field(11, _entry("tier", "x"))
        + _field(12, _entry("note", "hi"))
        + _field(13, owner)
        + _field(14, "a/b")
        + _field(14, "c/d")
    )
    namespace = _field(1, meta) + _field(2, _field(1, "kubernetes")) + _field(3, _field(1, "Terminating"))
    assert k8sproto.decode(_envelope("v1", "Namespace", namespace)) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "generateName": "gen-",
            "namespace": "ns1",
            "labels": {"app": "demo", "tier": "x"},
            "annotations": {"note": "hi"},
            "ownerReferences": [
                {"kind": "Job", "name": "j", "uid": "u-1", "apiVersion": "batch/v1", "controller": True}
            ],
            "finalizers": ["a/b", "c/d"],
        },
        "spec": {"finalizers": ["kubernetes"]},
    }


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (body("job"), 415, "not batch/v1 Job: send JSON"),  # a kind the table does not have
        (b'{"kind": "Namespace"}', 400, "magic"),  # JSON sent as protobuf
        (
            _envelope("v1", "Namespace", _field(1, _field(99, "x"))),
            415,
            "Namespace.metadata: protobuf field 99",
        ),
        (_envelope("v1", "ConfigMap", _field(7, 1)), 415, "ConfigMap: protobuf field 7"),
        (_envelope("v1", "Secret", _field(3, 5)), 400, "Secret.type: protobuf wire type 0"),
        (k8sproto.MAGIC + b"\x0a\x05ab", 400, "does not parse"),  # truncated
    ],
)
def test_what_is_not_decoded_is_refused(data: bytes, code: int, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        k8sproto.decode(data)
    assert caught.value.code == code and words in caught.value.message, caught.value.message


def test_empty_unknown_fields_are_skipped() -> None:
    """Go writes every non-pointer field; an empty field unknown to the table carries nothing."""
    raw = _field(1, _field(1, "x") + _field(99, "")) + _field(6, 0)
    assert k8sproto.decode(_envelope("v1", "ConfigMap", raw))["metadata"] == {"name": "x"}
