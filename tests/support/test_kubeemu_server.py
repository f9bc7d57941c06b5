"""``python -m tests.support.kubeemu.server --kubeconfig PATH`` (the README's way to try the operator without a cluster)
writes a kubeconfig for the port it listens on before it prints READY (its directory too), and kubectl can use that
file at once: ``kubectl create namespace`` (protobuf) included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.support.procs import stop_process

ROOT = Path(__file__).resolve().parents[2]


def test_kubeconfig_flag_writes_the_file_before_ready(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "not-yet" / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.kubeemu.server",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        port = int(line.split()[1])
        assert kubeconfig.is_file(), "the kubeconfig must exist once READY is printed"
        config = yaml.safe_load(kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        assert server == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{server}/api", timeout=10) as resp:
            assert "versions" in json.loads(resp.read())
        kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
        env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")}
        made = subprocess.run(
            [*kubectl, "create", "namespace", "by-hand"], env=env, capture_output=True, text=True
        )
        assert made.returncode == 0 and "namespace/by-hand created" in made.stdout, made.stderr
        shown = subprocess.run([*kubectl, "get", "ns", "by-hand", "-o", "json"], env=env, capture_output=True)
        assert json.loads(shown.stdout)["status"]["phase"] == "Active", shown.stderr
    finally:
        stop_process(proc, timeout=10)
