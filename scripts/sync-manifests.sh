#!/usr/bin/env bash
# Regenerate manifests/crd.yaml, the chart's crds/ and manifests/{rbac,operator}.yaml; --check only verifies.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" "$REPO/scripts/sync_manifests.py" "$@"
