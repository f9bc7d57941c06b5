"""Kubernetes protobuf request bodies, decoded into the JSON objects the store keeps.

Why: kubectl's imperative generators (``kubectl create namespace|configmap|secret|serviceaccount``) send built-in
kinds as ``application/vnd.kubernetes.protobuf``, not JSON, so without this the emulator answered them 415. The
answer stays JSON: kubectl's ``Accept`` header lists ``application/json`` after protobuf, and it takes either.

The body is the Kubernetes envelope: the magic ``k8s\\x00``, then a ``runtime.Unknown`` message {1 typeMeta
{1 apiVersion, 2 kind}, 2 raw (the object's own message), 3 contentEncoding, 4 contentType}. The wire format is
read with protobuf's *public* API: bytes parsed into ``google.protobuf.Empty`` are all unknown fields to it, and
``google.protobuf.unknown_fields.UnknownFieldSet`` lists them as (number, wire type, value) -- no generated
Kubernetes classes, and nothing from ``google.protobuf.internal`` (not a public API). What each field number means
is the table below, copied from the ``protobuf:"..."`` tags of k8s.io/api core/v1 and apimachinery meta/v1.

Honest limits: only the kinds in ``KINDS`` are decoded (anything else: 415 naming the kind, so the client can send
JSON instead -- ``kubectl create -f`` and ``apply -f`` always do). A non-empty field the table does not know is a
415 too, never silently dropped. Go's protobuf encoder writes every non-pointer field, empty or not, so empty
unknown fields are skipped, and so are the fields the API server sets itself on create (uid, resourceVersion,
creationTimestamp, status, ...).
"""

from __future__ import annotations

import base64
from typing import Any, Union

from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from .errors import ApiError

MAGIC = b"k8s\x00"
_VARINT, _LEN = 0, 2

# A field's type: one of these names, or a nested message's table. Bytes are base64 strings in JSON.
STRING, BYTES, RAW, BOOL, INT, STRINGS, MAP, BYTES_MAP, SKIP = (
    "string",
    "bytes",
    "raw",  # bytes kept as bytes (runtime.Unknown.raw, decoded further by the caller)
    "bool",
    "int",
    "strings",  # repeated string
    "map",  # map<string, string>
    "bytes-map",  # map<string, bytes>
    "skip",  # set by the API server on create: ignored, as the server ignores it
)
Table = dict[int, tuple[str, Union[str, "Table"]]]

TYPE_META: Table = {1: ("apiVersion", STRING), 2: ("kind", STRING)}
UNKNOWN: Table = {
    1: ("typeMeta", TYPE_META),
    2: ("raw", RAW),
    3: ("contentEncoding", STRING),
    4: ("contentType", STRING),
}
OWNER_REFERENCE: Table = {
    1: ("kind", STRING),
    3: ("name", STRING),
    4: ("uid", STRING),
    5: ("apiVersion", STRING),
    6: ("controller", BOOL),
    7: ("blockOwnerDeletion", BOOL),
}
OBJECT_META: Table = {
    1: ("name", STRING),
    2: ("generateName", STRING),
    3: ("namespace", STRING),
    4: ("selfLink", SKIP),
    5: ("uid", SKIP),
    6: ("resourceVersion", SKIP),
    7: ("generation", SKIP),
    8: ("creationTimestamp", SKIP),
    9: ("deletionTimestamp", SKIP),
    10: ("deletionGracePeriodSeconds", SKIP),
    11: ("labels", MAP),
    12: ("annotations", MAP),
    13: ("ownerReferences", OWNER_REFERENCE),  # repeated: see _REPEATED
    14: ("finalizers", STRINGS),
    17: ("managedFields", SKIP),
}
_REPEATED = {id(OWNER_REFERENCE)}  # message tables whose field is a list
KINDS: dict[tuple[str, str], Table] = {
    ("v1", "Namespace"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", STRINGS)}),
        3: ("status", SKIP),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", OBJECT_META),
        2: ("data", MAP),
        3: ("binaryData", BYTES_MAP),
        4: ("immutable", BOOL),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", BYTES_MAP),
        3: ("type", STRING),
        4: ("stringData", MAP),
        5: ("immutable", BOOL),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", OBJECT_META),
        4: ("automountServiceAccountToken", BOOL),
    },
}


def unsupported(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body (envelope and object) as the object's JSON form; raises ApiError 415/400."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "a Kubernetes protobuf body starts with the magic bytes k8s\\x00")
    envelope = message(UNKNOWN, body[len(MAGIC) :], "runtime.Unknown")
    if envelope.get("contentEncoding"):
        raise unsupported(f"contentEncoding {envelope['contentEncoding']!r} is not decoded by the emulator")
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    table = KINDS.get((api_version, kind))
    if table is None:
        known = ", ".join(k for _, k in KINDS)
        raise unsupported(
            f"the emulator decodes protobuf bodies of {known} only, not {api_version} {kind}: send JSON "
            "(kubectl create -f / apply -f do)"
        )
    return {"apiVersion": api_version, "kind": kind, **message(table, envelope.get("raw", b""), kind)}


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The (field number, wire type, value) triples of one serialised message, in order."""
    parsed = empty_pb2.Empty()
    try:
        parsed.ParseFromString(data)
    except DecodeError as exc:
        raise ApiError(400, "BadRequest", f"the protobuf body does not parse: {exc}") from exc
    return [(f.field_number, f.wire_type, f.data) for f in UnknownFieldSet(parsed)]


def message(table: Table, data: bytes, where: str) -> dict[str, Any]:
    """One message as a JSON object by ``table``; empty values are left out (Go's ``omitempty``)."""
    out: dict[str, Any] = {}
    for number, wire, value in fields(data):
        entry = table.get(number)
        if entry is None:
            if value in (0, b""):  # Go writes empty fields; an empty one says nothing
                continue
            raise unsupported(f"{where}: protobuf field {number} is not decoded by the emulator; send JSON")
        name, kind = entry
        if kind == SKIP:
            continue
        _expect(wire, _VARINT if kind in (BOOL, INT) else _LEN, f"{where}.{name}")
        _store(out, name, kind, value, f"{where}.{name}")
    return {key: value for key, value in out.items() if value not in ("", {}, [], b"")}


def _store(out: dict[str, Any], name: str, kind: str | Table, value: Any, where: str) -> None:
    if isinstance(kind, dict):
        item = message(kind, value, where)
        if id(kind) in _REPEATED:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    elif kind == STRING:
        out[name] = _text(value, where)
    elif kind == RAW:
        out[name] = bytes(value)
    elif kind == BYTES:
        out[name] = base64.b64encode(value).decode()
    elif kind == BOOL:
        out[name] = bool(value)
    elif kind == INT:
        out[name] = value - (1 << 64) if value >= 1 << 63 else value  # int64 two's complement
    elif kind == STRINGS:
        out.setdefault(name, []).append(_text(value, where))
    else:  # MAP / BYTES_MAP: repeated {1 key, 2 value} entries
        entry = message({1: ("key", STRING), 2: ("value", RAW)}, value, where)
        raw = entry.get("value", b"")
        shown = _text(raw, where) if kind == MAP else base64.b64encode(raw).decode()
        out.setdefault(name, {})[entry.get("key", "")] = shown


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "BadRequest", f"{where}: not UTF-8") from exc


def _expect(wire: int, wanted: int, where: str) -> None:
    if wire != wanted:
        raise ApiError(400, "BadRequest", f"{where}: protobuf wire type {wire}, expected {wanted}")
