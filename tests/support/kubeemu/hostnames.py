"""The emulator's DNS test shim: pod hostnames of a headless Service, rewritten to the loopback address.

A real cluster resolves ``<hostname>.<subdomain>``, ``<hostname>.<subdomain>.<namespace>``,
``...<namespace>.svc`` and ``...<namespace>.svc.cluster.local`` through the headless Service
``<subdomain>``'s per-pod DNS records. The emulator has no DNS, and the toy kubelet runs every pod as a
process on 127.0.0.1; torch's TCPStore and gloo resolve names in C++, so no Python-level patch can help.
So, for a pod whose template has a ``subdomain``, the kubelet rewrites such names in the container's
command, args and env values to ``127.0.0.1`` before it starts the process (ports and the rest of the
string are kept). A test shim only: product code must never do this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LOOPBACK = "127.0.0.1"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # an RFC 1123 DNS label: the pod's hostname


def pattern(subdomain: str, namespace: str) -> re.Pattern[str]:
    """Matches ``<label>.<subdomain>[.<namespace>[.svc[.cluster.local]]]`` as a whole hostname: not
    preceded by a name character or dot, not followed by a name character or a further ``.label``."""
    sub, ns = re.escape(subdomain), re.escape(namespace)
    return re.compile(
        rf"(?<![\w.-]){_LABEL}\.{sub}(?:\.{ns}(?:\.svc(?:\.cluster\.local)?)?)?(?![\w-]|\.[\w-])",
        re.IGNORECASE,
    )


def rewrite(text: str, subdomain: str, namespace: str) -> str:
    """``text`` with every pod hostname of the headless Service ``subdomain`` replaced by 127.0.0.1."""
    return pattern(subdomain, namespace).sub(LOOPBACK, text)


def rewrite_all(texts: Iterable[str], subdomain: str, namespace: str) -> list[str]:
    regex = pattern(subdomain, namespace)
    return [regex.sub(LOOPBACK, text) for text in texts]
