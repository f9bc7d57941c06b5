"""``make demo`` / ``python -m tests.support.demo``: a local "cluster" in one command, built from the test shims.

Why it lives in tests/: everything it starts besides the product is a test harness -- the Kubernetes API emulator
(``tests.support.kubeemu``: no scheduler, no RBAC enforcement, no CEL, protobuf only for what ``k8sproto``
decodes), its toy kubelet that runs each pod as a local process, and the SeaweedFS fixture
(``tests.support.s3server``). The operator (``python -m trainop``) and the trainer are the product, run as in a
cluster; the same kubectl commands then work against kind or a real cluster.

On 127.0.0.1 only it starts the emulator (``python -m tests.support.kubeemu.server --kubeconfig``), a real S3
server with a bucket and the Secret ``s3-credentials`` in the namespace, the kubelet (a thread here), and the
operator (checkpoints under ``s3://checkpoints/runs``, the S3 endpoint a 127.0.0.1 URL: pods are local processes,
so nothing needs the DNS shim of ``kubeemu.hostnames``); then it applies ``manifests/crd*.yaml`` and the sample,
runs ``kubectl get tr -w`` until every run of the sample has finished, and copies each run's ``forecast.png`` and
``importance.png`` out of S3 into the work directory.

Every child gets a session of its own, so the terminal's Ctrl-C reaches only this process, which stops them in
reverse order (the watcher, the operator, the pods, the emulator, S3); a second Ctrl-C does not cut that short.
Each child's environment carries ``KUBEEMU_DEMO=<workdir>``, so a test can prove that nothing is left running.

Exit codes: 0 every run Succeeded (with ``--keep``: and then a signal stopped it); 1 a run failed, or something
did not start; 130 stopped before the runs finished.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

import yaml
from trainop.names import job_name

from tests.support.kubeemu.client import Api, ApiResponseError
from tests.support.kubeemu.kubelet import Kubelet, trainer_pod_env
from tests.support.kubeemu.server import write_kubeconfig
from tests.support.procs import stop_process
from tests.support.s3server import S3Server
from tests.support.waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKER = "KUBEEMU_DEMO"
BUCKET, PREFIX, SECRET = "checkpoints", "runs", "s3-credentials"
RUNS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns"
#: ``--quick`` (CI): the e2e tests' tiny spec -- minutes at full size become about half a minute.
QUICK: dict[str, dict[str, Any]] = {
    "data": {"inputWindow": 16, "horizon": 3, "start": "2024-01-01"},
    "model": {"hiddenSize": 8, "attentionHeads": 2},
    "training": {"epochs": 2, "batchSize": 256, "device": "cpu", "warmupEpochs": 0},
}
ARTEFACTS = ("forecast.png", "importance.png")


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


_T0 = time.monotonic()


def say(text: str) -> None:
    print(f"demo [{time.monotonic() - _T0:5.1f}s]: {text}", flush=True)


def prepare(docs: list[dict[str, Any]], quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The sample's documents as the demo applies them, and a note for each change made to a TrainingRun: its
    checkpoints go to the demo's S3 (the operator's default endpoint and Secret), and ``quick`` shrinks it."""
    out, notes = [], []
    for doc in docs:
        doc = copy.deepcopy(doc)
        out.append(doc)
        if doc.get("kind") != "TrainingRun":
            continue
        name, spec = doc["metadata"]["name"], doc.setdefault("spec", {})
        checkpoint = spec.setdefault("checkpoint", {})
        for key, parent in (("s3Endpoint", checkpoint), ("s3CredentialsSecret", spec)):
            if parent.get(key):
                del parent[key]
                notes.append(f"{name}: dropped {key} (the demo's S3 server and Secret {SECRET} instead)")
        if quick:
            if spec.get("symbol"):
                spec["symbols"] = [spec["symbol"]]
            for section, values in QUICK.items():
                spec.setdefault(section, {}).update(values)
            notes.append(f"{name}: --quick: {QUICK}")
    return out, notes


def run_names(docs: list[dict[str, Any]]) -> list[str]:
    return [d["metadata"]["name"] for d in docs if d.get("kind") == "TrainingRun"]


def checkpoint_prefix(run: dict[str, Any], namespace: str) -> str:
    """Where the operator has the run's trainer write: its own ``checkpoint.uri``, else the demo's default."""
    uri = ((run.get("spec") or {}).get("checkpoint") or {}).get("uri")
    return str(uri or f"s3://{BUCKET}/{PREFIX}/{namespace}/{run['metadata']['name']}").rstrip("/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """The components, started in order and registered on ``stack`` so that they stop in reverse order."""

    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args, self.stack = args, stack
        self.workdir: pathlib.Path = args.workdir.resolve()
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ns: str = args.namespace
        self.api: Api | None = None
        self.s3: S3Server | None = None
        self.kubelet: Kubelet | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "operator"))),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.workdir / "kube-cache"),
            **extra,
        }

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """A child in a session of its own, stopped by ``stack``; stderr goes where stdout goes unless told."""
        popen.setdefault("stderr", subprocess.STDOUT)
        popen.setdefault("env", self.env())
        proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, **popen)
        self.stack.callback(stop_process, proc, 20)
        return proc

    def start(self) -> None:
        pods = self.workdir / "pods"
        server = [sys.executable, "-m", "tests.support.kubeemu.server", "--port", str(self.args.port)]
        server += ["--kubeconfig", str(self.kubeconfig), "--pod-logs", str(pods)]
        emulator = self.spawn(server, stdout=subprocess.PIPE, stderr=self.log("emulator"))
        self.s3 = S3Server(self.workdir / "s3")  # starts while the emulator imports
        self.stack.callback(self.s3.close)
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        assert emulator.stdout is not None
        ready = emulator.stdout.readline().decode()
        if not ready.startswith("READY "):
            raise RuntimeError(f"the emulator did not start (see {self.workdir / 'emulator.log'})")
        self.api = Api(f"http://127.0.0.1:{int(ready.split()[1])}")
        if self.ns != "default":  # kubectl's namespace without -n: the sample's
            write_kubeconfig(self.kubeconfig, self.api.url, self.ns)
        say(f"Kubernetes API emulator on {self.api.url}, S3 (SeaweedFS) on {self.s3.endpoint}")
        print(f"\nexport KUBECONFIG={self.kubeconfig}\n", flush=True)
        self.namespace()
        env = trainer_pod_env(str(self.kubeconfig), **{MARKER: str(self.workdir)})
        self.kubelet = self.stack.enter_context(Kubelet(self.api, pods, extra_env=env))  # every namespace
        crds = sorted(glob.glob(str(ROOT / "manifests" / "crd*.yaml")))
        self.kubectl("apply", *(arg for crd in crds for arg in ("-f", crd)))
        wait_for("the CRD to be served", lambda: self.api and self.api.maybe_get(RUNS.format(ns=self.ns)))
        self.operator()

    def log(self, name: str) -> IO[bytes]:
        out = (self.workdir / f"{name}.log").open("ab")
        self.stack.callback(out.close)
        return out

    def namespace(self) -> None:
        assert self.api is not None and self.s3 is not None
        if self.ns != "default":
            self.api.create("/api/v1/namespaces", {"metadata": {"name": self.ns}})
        secret = {"AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key}
        body = {"metadata": {"name": SECRET}, "stringData": secret}
        self.api.create(f"/api/v1/namespaces/{self.ns}/secrets", body)
        env_file = self.workdir / "s3.env"  # for a person (or a test) who wants to look into the bucket
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.s3.env.items()))

    def operator(self) -> None:
        assert self.s3 is not None
        port = self.args.metrics_port or free_port()
        settings = {
            "TRAINOP_NAMESPACES": "",  # cluster-wide: a run in a namespace of your own works too (with the Secret)
            "TRAINOP_METRICS_HOST": "127.0.0.1",
            "TRAINOP_METRICS_PORT": str(port),
            "TRAINOP_CHECKPOINT_PREFIX": f"s3://{BUCKET}/{PREFIX}",
            "TRAINOP_S3_ENDPOINT": self.s3.endpoint,
            "TRAINOP_S3_SECRET_NAME": SECRET,
            "TRAINOP_STATUS_THROTTLE_SECONDS": "2",
            "TRAINOP_LOG_FORMAT": "text",
        }
        proc = self.spawn(
            [sys.executable, "-m", "trainop"], stdout=self.log("operator"), env=self.env(**settings)
        )

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the operator exited with {proc.returncode} (see {self.workdir}/operator.log)"
                )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)

        wait_for("the operator's /healthz", healthy, timeout=120, interval=0.3)
        say(f"operator running (metrics on http://127.0.0.1:{port}/metrics, log {self.workdir}/operator.log)")

    def kubectl(self, *args: str) -> None:
        say("kubectl " + " ".join(args))
        subprocess.run(["kubectl", *args], env=self.env(), check=True, timeout=120)

    def apply_sample(self) -> list[str]:
        docs = [d for d in yaml.safe_load_all(self.args.sample.read_text()) if d]
        docs, notes = prepare(docs, self.args.quick)
        names = run_names(docs)
        if not names:
            raise RuntimeError(f"{self.args.sample} has no TrainingRun")
        for note in notes:
            say(note)
        path = self.workdir / "sample.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.kubectl("apply", "-n", self.ns, "-f", str(path))
        return names

    def follow(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """``kubectl get tr -w`` until every run is Succeeded or Failed; their final objects."""
        assert self.api is not None and self.kubelet is not None
        say(
            f"watching; in another shell: kubectl logs -f job/{job_name(names[0])}, or kubectl describe tr {names[0]}"
        )
        watch = self.spawn(["kubectl", "get", "tr", "-w", "-n", self.ns])
        deadline = time.monotonic() + self.args.timeout if self.args.timeout else None
        reported = 0
        while True:
            runs = {n: self.api.get(f"{RUNS.format(ns=self.ns)}/{n}") for n in names}
            if all((r.get("status") or {}).get("phase") in ("Succeeded", "Failed") for r in runs.values()):
                break
            for error in self.kubelet.errors[reported:]:
                say(f"kubelet: {error}")
            reported = len(self.kubelet.errors)
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"the runs did not finish within {self.args.timeout:g}s")
            time.sleep(1)
        time.sleep(0.5)  # let the watcher print the last change
        stop_process(watch, 5)
        return runs

    def report(self, runs: dict[str, dict[str, Any]]) -> bool:
        """A line per run and its artefacts copied out of S3; True if all Succeeded."""
        assert self.s3 is not None
        ok, client = True, self.s3.client()
        for name, run in runs.items():
            status = run.get("status") or {}
            succeeded = status.get("phase") == "Succeeded"
            ok &= succeeded
            say(
                f"{name}: {status.get('phase')} {status.get('reason') or ''} {status.get('message') or ''}".rstrip()
            )
            if not succeeded and self.kubelet is not None:  # why, from the run's last pod
                pods = sorted((self.workdir / "pods").glob(f"{job_name(name)}-*.log"), key=os.path.getmtime)
                for line in (self.kubelet.logs(pods[-1].stem) if pods else "").splitlines()[-15:]:
                    say(f"  | {line}")
            prefix = checkpoint_prefix(run, self.ns)
            bucket, _, key = prefix.removeprefix("s3://").partition("/")
            for artefact in ARTEFACTS:
                target = self.workdir / "artefacts" / name / artefact
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(Exception):  # a failed run may have none
                    client.download_file(bucket, f"{key}/{artefact}", str(target))
                    say(f"  {prefix}/{artefact} -> {target} ({target.stat().st_size:,} bytes)")
        return ok


def _handler(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: say("still stopping what it started ..."))
    raise Stop(signal.Signals(signum).name)


@contextlib.contextmanager
def claimed(workdir: pathlib.Path, fresh: bool) -> Iterator[None]:
    """The work directory for this demo alone: refused while another demo's pid holds it; emptied if ``fresh``."""
    pidfile = workdir / "demo.pid"
    with contextlib.suppress(ValueError, OSError):
        os.kill(int(pidfile.read_text()), 0)
        raise RuntimeError(f"another demo (pid {pidfile.read_text().strip()}) uses {workdir}")
    if fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    try:
        yield
    finally:
        pidfile.unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sample", type=pathlib.Path, default=ROOT / "manifests" / "samples" / "sol-run.yaml"
    )
    parser.add_argument("--keep", action="store_true", help="keep everything running after the runs finish")
    parser.add_argument("--quick", action="store_true", help="a tiny spec (2 epochs, hiddenSize 8): for CI")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--workdir", type=pathlib.Path, help="default: runs/demo (emptied at start)")
    parser.add_argument("--port", type=int, default=0, help="the emulator's port (default: a free one)")
    parser.add_argument("--metrics-port", type=int, default=0, help="the operator's (default: a free one)")
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds until the runs must finish (0: none)"
    )
    args = parser.parse_args(argv)
    args.fresh = args.workdir is None
    args.workdir = args.workdir or ROOT / "runs" / "demo"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("kubectl") is None:
        say("kubectl is not on PATH (the demo applies and watches with it)")
        return 1
    os.environ[MARKER] = str(
        args.workdir.resolve()
    )  # inherited by every child (the kubelet's pods: extra_env)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)
    finished = ok = False
    try:
        with claimed(args.workdir, args.fresh), contextlib.ExitStack() as stack:
            demo = Demo(args, stack)
            demo.start()
            ok = demo.report(demo.follow(demo.apply_sample()))
            finished = True
            if args.keep:
                say(
                    f"{'all runs Succeeded' if ok else 'a run failed'}; still running (--keep): Ctrl-C stops it"
                )
                while True:
                    signal.pause()
            say("stopping")
            return 0 if ok else 1
    except Stop as stop:
        say(f"{stop} received: stopped everything it started")
        return (0 if ok else 1) if finished else 130
    except (RuntimeError, AssertionError, subprocess.CalledProcessError, OSError, ApiResponseError) as exc:
        say(f"failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
