"""``python -m trainop``: run the operator with the ``TRAINOP_*`` settings.

Why not only ``kopf run``: the Helm chart sets environment variables, not flags; this maps
``TRAINOP_NAMESPACES`` to kopf's namespaces (empty: cluster-wide) and ``TRAINOP_PEERING`` to peering (unset:
standalone, one replica)."""

from __future__ import annotations

import kopf

from .settings import Settings


def main() -> None:
    settings = Settings()  # fails here, naming the variable, on a bad TRAINOP_* value
    kopf.configure(verbose=False)
    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
    )


if __name__ == "__main__":
    main()
