"""Run the emulator: in a subprocess for the test session (``python -m tests.support.kubeemu.server``), or in a
background thread for in-process use. The subprocess keeps the API off the test process's GIL and event
loops (kopf runs its own) and dies with the session; it prints ``READY <port>`` once it listens, after writing
the kubeconfig that ``--kubeconfig PATH`` asks for (so a script may use the file as soon as it reads READY).
``--pod-logs DIR`` names the kubelet harness's work directory, whose ``<pod>.log`` files ``kubectl logs`` shows.

By hand (the emulator alone: nothing runs Jobs; ``python -m tests.support.demo`` adds the kubelet, S3 and the
operator)::

    python -m tests.support.kubeemu.server --port 8001 --kubeconfig /tmp/kubeemu.yaml
    KUBECONFIG=/tmp/kubeemu.yaml kubectl create namespace demo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator

import kmock
import yaml

from tests.support.procs import stop_process

from .emulator import ApiEmulator

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


def write_kubeconfig(path: pathlib.Path, server: str, namespace: str = "default") -> pathlib.Path:
    """A kubeconfig for kubectl, the kubernetes client and kopf; plain HTTP, a dummy token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "kubeemu", "cluster": {"server": server}}],
        "users": [{"name": "kubeemu", "user": {"token": "kubeemu"}}],  # a dummy: empty users fail to load
        "contexts": [
            {"name": "kubeemu", "context": {"cluster": "kubeemu", "user": "kubeemu", "namespace": namespace}}
        ],
        "current-context": "kubeemu",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


async def serve(
    port: int,
    ready: threading.Event | None = None,
    stop: asyncio.Event | None = None,
    holder: list[ApiEmulator] | None = None,
    kubeconfig: pathlib.Path | None = None,
    pod_logs: pathlib.Path | None = None,
) -> None:
    async with (
        ApiEmulator(pod_logs=pod_logs) as emulator,
        kmock.Server(emulator, host="127.0.0.1", port=port) as server,
    ):
        if holder is not None:
            holder.append(emulator)
        if kubeconfig is not None:
            write_kubeconfig(kubeconfig, f"http://127.0.0.1:{server.port}")
        print(f"READY {server.port}", flush=True)
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())


@contextlib.contextmanager
def emulator_subprocess(
    log_path: pathlib.Path | None = None, pod_logs: pathlib.Path | None = None
) -> Iterator[str]:
    """Start ``python -m tests.support.kubeemu.server`` on a free port; yield its base URL."""
    log = open(log_path, "wb") if log_path else None  # noqa: SIM115
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    extra = ["--pod-logs", str(pod_logs)] if pod_logs is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kubeemu.server", "--port", "0", *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"the Kubernetes emulator did not start: {line!r} (log: {log_path})")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        stop_process(proc, timeout=10)
        if log is not None:
            log.close()


@contextlib.contextmanager
def emulator_thread() -> Iterator[tuple[str, ApiEmulator]]:
    """Serve in a daemon thread of this process; yields (base URL, emulator) for direct inspection."""
    ready, holder = threading.Event(), list[ApiEmulator]()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        loop.run_until_complete(serve(0, ready, stop, holder))

    thread = threading.Thread(target=run, name="kubeemu", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the Kubernetes emulator thread did not start")
    emulator = holder[0]
    try:
        yield f"http://127.0.0.1:{emulator.servers[0].port}", emulator
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Kubernetes API emulator for tests (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--kubeconfig", type=pathlib.Path, help="also write a kubeconfig for it here (before READY)"
    )
    parser.add_argument(
        "--pod-logs", type=pathlib.Path, help="the kubelet harness's directory of <pod>.log (kubectl logs)"
    )
    args = parser.parse_args()
    kubeconfig = args.kubeconfig.resolve() if args.kubeconfig else None
    if kubeconfig:
        print(f"the kubeconfig: export KUBECONFIG={kubeconfig} (written before READY)", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C by hand: a clean stop, no traceback
        asyncio.run(serve(args.port, kubeconfig=kubeconfig, pod_logs=args.pod_logs))


if __name__ == "__main__":
    main()
