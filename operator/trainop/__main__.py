"""``python -m trainop``: run the operator with the ``TRAINOP_*`` settings.

Why not only ``kopf run``: the Helm chart sets environment variables, not flags; this maps
``TRAINOP_NAMESPACES`` to kopf's namespaces (empty: cluster-wide) and ``TRAINOP_PEERING`` to peering (unset:
standalone, one replica) and ``TRAINOP_LOG_FORMAT`` to kopf's log format (JSON lines in a pod). A bad
``TRAINOP_*`` value stops it at once with the variable's name (exit code 2)."""

from __future__ import annotations

import sys

import kopf
from pydantic import ValidationError

from . import logs
from .settings import Settings


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as err:
        for e in err.errors():
            name = "TRAINOP_" + "_".join(str(p) for p in e["loc"]).upper()
            print(f"trainop: {name}: {e['msg']}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
