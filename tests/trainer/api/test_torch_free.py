"""trainer.api and the operator import without torch (and without the rest of the trainer).

The operator image installs ``.[operator]`` and copies only trainer/api/ of the trainer, so importing
``trainer.api`` and every ``trainop`` module must leave torch, numpy and pandas out of ``sys.modules`` and load
no ``trainer`` module outside ``trainer.api``. A fresh interpreter, since this test process has torch loaded."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROBE = """
import importlib, json, pkgutil, sys
import trainer.api, trainop
names = ["trainer.api." + m.name for m in pkgutil.iter_modules(trainer.api.__path__)]
names += ["trainop." + m.name for m in pkgutil.iter_modules(trainop.__path__) if m.name != "__main__"]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_trainer_api_and_trainop_do_not_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.splitlines()[-1])
    assert {"trainer.api.spec", "trainer.api.manifest", "trainer.api.status", "trainer.api.errors"} <= set(
        out["imported"]
    )
    assert "trainop.handlers" in out["imported"]
    modules = set(out["modules"])
    for heavy in ("torch", "numpy", "pandas", "boto3", "matplotlib"):
        assert heavy not in modules, f"{heavy} imported by trainer.api or trainop"
    outside = {m for m in modules if m.startswith("trainer.") and not m.startswith("trainer.api")}
    assert not outside, (
        f"trainop or trainer.api import trainer modules outside trainer.api: {sorted(outside)}"
    )


def test_trainer_api_lists_the_shared_modules() -> None:
    import trainer.api

    assert {m.name for m in pkgutil.iter_modules(trainer.api.__path__)} >= {
        "spec",
        "status",
        "exitcodes",
        "errors",
    }
