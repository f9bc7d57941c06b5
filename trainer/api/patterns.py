"""Patterns and label rules of a TrainingRun's fields: the text of each is at once a pydantic (Rust), a CRD (Go)
and a Python regular expression, so character classes are spelled out.

Why apart from ``trainer.api.spec``: they are Kubernetes' and S3's grammars (quantities, durations, DNS labels,
image references, label keys and values, bucket names), not the model's decisions; the model, the cluster rules
(``trainer.api.cluster``) and the sweep model all check against them.
"""

from __future__ import annotations

import re

SYMBOL_PATTERN = r"^[A-Z0-9]{2,10}$"
# Kubernetes quantities ("500m", "8Gi", "1") or plain integers.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]i?|Ki)?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An S3-compatible endpoint: a scheme and a host, no credentials (they would be logged).
S3_ENDPOINT_PATTERN = r"^https?://[^\s/@]+(:\d+)?(/.*)?$"
# An MLflow tracking server: http(s)://host[:port][/path], no user:password@ (credentials come from a Secret).
MLFLOW_URI_PATTERN = r"^https?://[^\s/@]+(/[^\s]*)?$"
# The checkpoint/data URIs: a local path or s3://bucket/prefix (bucket names per the S3 rules).
S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
# A PersistentVolumeClaim as a checkpoint store: pvc://CLAIM[/path], CLAIM a DNS-1123 label (the operator mounts
# it at <TRAINER_PVC_ROOT>/CLAIM; the trainer maps the URI to that directory). No "." or ".." path segments: the
# path must stay inside the claim.
PVC_URI_RE = re.compile(r"^pvc://(?P<claim>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)(?:/(?P<path>\S*))?$")
# In a TrainingRun object (the CRD) checkpoints must outlive the pod: S3 or a PersistentVolumeClaim (a pod's own
# filesystem is lost with it, so every retry would start over). The CRD pattern checks the scheme and the claim
# name; the model checks the bucket and the path (cluster_problems, CheckpointSpec).
CLUSTER_CHECKPOINT_PATTERN = r"^(s3://|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(/|$))"
# Container image references (the distribution/reference grammar, without IPv6 hosts): [host[:port]/]path[:tag]
# [@digest], the path lower case. Character classes are spelled out: the same text is a pydantic (Rust), CRD
# (Go) and Python pattern, and ``\w`` means different things in them.
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# Label values (<= 63): empty, or alphanumerics with -_. inside.
LABEL_VALUE_PATTERN = r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
# Label keys: an optional DNS-subdomain prefix (<= 253) and "/", then a name (<= 63) as a non-empty label value.
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
# A Kueue LocalQueue: an object name (lower-case DNS subdomain) that must also fit the queue-name label (<= 63).
QUEUE_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
# The extended resource whose limit sets the default processes per pod (one training process per GPU).
GPU_RESOURCE = "nvidia.com/gpu"


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return f"'{key}': the prefix before '/' must be a lower-case DNS subdomain such as nvidia.com"
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        return (
            f"'{key}' is not a label key: the name (after an optional prefix/) must be 1-63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, e.g. nvidia.com/gpu.product"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value, or None."""
    if len(value) > 63 or not re.match(LABEL_VALUE_PATTERN, value):
        return (
            f"'{value}' is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return None


def image_problem(image: str) -> str | None:
    """Why ``image`` is not a container image reference (``IMAGE_PATTERN``), or None."""
    if re.match(IMAGE_PATTERN, image):
        return None
    return (
        f"'{image}' is not an image reference such as registry.example/trainer:1.2.3 "
        "(no spaces; repository path in lower case; optional :tag and @sha256:digest)"
    )


def node_selector_problems(selector: dict[str, str]) -> list[str]:
    """Why ``selector``'s keys and values are not Kubernetes label keys and values (empty: they are)."""
    return [p for k, v in selector.items() for p in (label_key_problem(k), label_value_problem(v)) if p]


def split_pvc_uri(uri: str) -> tuple[str, str]:
    """``pvc://CLAIM/a/b/`` -> ``("CLAIM", "a/b")``; ValueError saying what is wrong with any other text."""
    m = PVC_URI_RE.match(uri)
    if not m:
        raise ValueError(
            f"'{uri}' is not a PersistentVolumeClaim URI: expected pvc://CLAIM[/path], CLAIM a lower-case DNS "
            "label (at most 63 letters, digits and '-')"
        )
    parts = [p for p in (m.group("path") or "").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"'{uri}': '.' and '..' are not allowed in the path (it must stay inside the claim)")
    return m.group("claim"), "/".join(parts)
