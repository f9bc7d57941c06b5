"""``python -m trainop``: run the operator with the ``TRAINOP_*`` settings; ``python -m trainop COMMAND``: the
client commands (``submit``, ``logs``, ``wait``, ``list``: ``trainop.client_cli``).

Why not only ``kopf run``: the Helm chart sets environment variables, not flags; this maps
``TRAINOP_NAMESPACES`` to kopf's namespaces (empty: cluster-wide) and ``TRAINOP_PEERING`` to peering (unset:
standalone, one replica) and ``TRAINOP_LOG_FORMAT`` to kopf's log format (JSON lines in a pod). A bad
``TRAINOP_*`` value stops it at once with the variable's name, and the key inside a JSON one such as
``TRAINOP_TRAINER_PROFILES`` (exit code 2). Without arguments (the chart's command) it is the operator, exactly
as before the client commands existed; those are imported only when asked for, so the operator's start-up
imports nothing of theirs."""

from __future__ import annotations

import sys

import kopf
from pydantic import ValidationError

from . import logs
from .settings import Settings


def describe_errors(err: ValidationError) -> list[str]:
    """One line per problem: the variable, then the key inside a JSON one (``TRAINOP_TRAINER_PROFILES:
    cpu.nodeSelector: ...``); a problem of two variables together names them in its message."""
    lines = []
    for e in err.errors():
        variable, *keys = [p for p in e["loc"] if p != "[key]"] or [""]  # [key]: a profile's name itself
        key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        where = [f"TRAINOP_{str(variable).upper()}"] if variable else []
        lines.append(": ".join([*where, *([key] if key else []), e["msg"]]))
    return lines


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as err:
        for line in describe_errors(err):
            print(f"trainop: {line}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
    )
    return 0


def entry(argv: list[str]) -> int:
    """No arguments or ``operator``: the operator; anything else: a client command (``--help`` lists them)."""
    if not argv or argv == ["operator"]:
        return main()
    from .client_cli import main as client_main

    return client_main(argv)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
