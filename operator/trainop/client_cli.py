"""``python -m trainop submit | logs | wait | list``: submit a TrainingRun and follow it from a terminal.

Why in the operator's package: it is the operator's API seen from a laptop (the CRD's group, the run's labels,
its condition reasons), and one ``pip install`` gives both. ``python -m trainop`` without arguments still runs
the operator (the Helm chart's command); only a subcommand gets here. Each command is a thin function over
``client_kube`` (the API), ``client_stream`` (following a run) and ``client_follow`` (what is shown, and the
exit code: ``client_follow.Exit``, the README's table). A manifest is read and validated here with the shared
spec model (``trainer.api.manifest``) before any API call, so a bad one is refused with the file and field
named (exit 2) and never reaches the cluster; a second submit of the same run creates nothing and says what
is there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from trainer.api.manifest import SpecError, load_manifest, parse_spec
from trainer.api.spec import TrainingRunSpec

from .client_display import PlainDisplay, QuietDisplay, make_display
from .client_follow import EXIT_MEANINGS, Exit, Follower
from .client_kube import Cluster, ClusterError, api_error
from .client_stream import follow, pick_pod, pod_index
from .settings import parse_duration

MAX_DIFFERENCES = 5
EXIT_TABLE = "\n".join(f"  {code.value:>3}  {text}" for code, text in EXIT_MEANINGS.items())


class UsageError(Exception):
    """Bad input found before any API call: one line per problem, naming the file, field or flag (exit 2)."""


def duration(text: str) -> float:
    """``--timeout``: seconds (``90``) or a duration (``90s``, ``15m``, ``1h30m``)."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not seconds nor a duration such as 90s or 15m"
        ) from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="default: the manifest's, else the kubeconfig context's")
    common.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config, else in-cluster")
    common.add_argument("--context", help="a kubeconfig context (default: the current one)")
    top = argparse.ArgumentParser(
        prog="python -m trainop",
        description="Without arguments: run the operator. With a command: submit and follow TrainingRuns.",
        epilog=f"exit codes:\n{EXIT_TABLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("operator", help="run the operator (the same as no arguments)")
    p = sub.add_parser("submit", parents=[common], help="create a run (or show the existing one)")
    p.add_argument("file", help="a TrainingRun manifest (YAML or JSON)")
    p.add_argument(
        "-f", "--follow", action="store_true", help="follow its progress and log until it finishes"
    )
    p.add_argument("--timeout", type=duration, help="with --follow: stop following after this long (exit 3)")
    p = sub.add_parser("logs", parents=[common], help="the trainer's log lines of a run")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="follow new lines until the run finishes")
    p.add_argument("--raw", action="store_true", help="the lines as written (JSON in a pod), not parsed")
    p = sub.add_parser("wait", parents=[common], help="wait until a run finishes; exit with its outcome")
    p.add_argument("name")
    p.add_argument("--timeout", type=duration, help="give up after this long (exit 3)")
    p = sub.add_parser("list", parents=[common], help="the runs of a namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    return top


# --- pure parts ---------------------------------------------------------------------------------------------


def read_manifest(path: str) -> tuple[dict[str, Any], str, TrainingRunSpec]:
    """(document, name, spec) of a TrainingRun manifest; SpecError (naming the file and fields) if invalid."""
    name, spec = load_manifest(path)
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return dict(doc), name, spec


def spec_error_lines(err: SpecError) -> list[str]:
    """``FILE: spec.training.epochs: ...``: each problem on its own line, with the file."""
    return [f"{err.source}: {problem}" for problem in err.problems]


def manifest_namespace(doc: Mapping[str, Any], flag: str | None, source: str) -> str | None:
    """The namespace the manifest and ``--namespace`` agree on (None: the context's); as kubectl, refuses
    a manifest whose ``metadata.namespace`` differs from the flag."""
    own = (doc.get("metadata") or {}).get("namespace")
    if flag and own and own != flag:
        raise UsageError(f"{source}: metadata.namespace: {own!r} differs from --namespace {flag!r}")
    return flag or (str(own) if own else None)


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [line for key in sorted({*a, *b}) for line in _diff(a.get(key), b.get(key), f"{path}.{key}")]
    return [] if a == b else [f"{path}: {a!r} in the cluster, {b!r} in the file"]


def spec_differences(existing: Mapping[str, Any] | None, submitted: TrainingRunSpec) -> list[str]:
    """How the cluster's spec differs from the submitted one, as validated models (so defaults the API
    server filled in are no difference); the first few, then how many more."""
    try:
        theirs = parse_spec(dict(existing or {}), "the existing run").model_dump(by_alias=True, mode="json")
    except SpecError as err:
        return [f"the existing spec does not validate: {'; '.join(err.problems)}"]
    lines = _diff(theirs, submitted.model_dump(by_alias=True, mode="json"), "spec")
    more = len(lines) - MAX_DIFFERENCES
    return lines[:MAX_DIFFERENCES] + ([f"... and {more} more"] if more > 0 else [])


def describe(run: Mapping[str, Any]) -> str:
    """'phase Running, epoch 2/3' (what is there now)."""
    status = run.get("status") or {}
    parts = [f"phase {status.get('phase') or 'Pending'}"]
    if status.get("reason"):
        parts[0] += f" ({status['reason']})"
    epoch = (status.get("progress") or {}).get("epochDisplay")
    if epoch:
        parts.append(f"epoch {epoch}")
    if status.get("foldsDisplay"):
        parts.append(f"folds {status['foldsDisplay']}")
    return ", ".join(parts)


def age(created: str | None, now: datetime) -> str:
    """kubectl's AGE column, roughly: 45s, 12m, 5h, 3d."""
    if not created:
        return "<unknown>"
    seconds = max(int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def list_table(runs: Sequence[Mapping[str, Any]], now: datetime, all_namespaces: bool) -> str:
    head = ["NAMESPACE"] if all_namespaces else []
    rows = [[*head, "NAME", "SYMBOL", "PHASE", "EPOCH", "FOLDS", "REASON", "AGE"]]
    for run in sorted(runs, key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"]["name"])):
        meta, status = run["metadata"], run.get("status") or {}
        rows.append(
            [
                *([meta.get("namespace", "")] if all_namespaces else []),
                meta["name"],
                str((run.get("spec") or {}).get("symbol") or ""),
                status.get("phase") or "Pending",
                (status.get("progress") or {}).get("epochDisplay") or "",
                status.get("foldsDisplay") or "",
                status.get("reason") or "",
                age(meta.get("creationTimestamp"), now),
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _shape(run: Mapping[str, Any]) -> tuple[bool, bool]:
    """(walk-forward, multi-worker) from the run's spec as stored."""
    spec = run.get("spec") or {}
    workers = spec.get("workers")
    return bool(spec.get("walkForward")), isinstance(workers, int) and workers > 1


# --- commands -----------------------------------------------------------------------------------------------


def _follow(cluster: Cluster, ns: str, run: Mapping[str, Any], timeout: float | None) -> int:
    walk_forward, multi = _shape(run)
    display = make_display()
    name = run["metadata"]["name"]
    follower = Follower(name, display, status_epochs=walk_forward)
    try:
        code, line = follow(cluster, ns, follower, logs=not walk_forward, worker0=multi, timeout=timeout)
    finally:
        display.close()
    print(line, flush=True)
    return code


def submit(args: argparse.Namespace) -> int:
    doc, name, spec = read_manifest(args.file)
    wanted = manifest_namespace(doc, args.namespace, args.file)
    cluster = Cluster.connect(args.kubeconfig, args.context)
    ns = wanted or cluster.namespace
    body = {**doc, "metadata": {**(doc.get("metadata") or {}), "namespace": ns}}
    run, created = cluster.create_run(ns, body)
    if created:
        print(f"trainingrun {name} created in namespace {ns}", flush=True)
    else:
        differences = spec_differences(run.get("spec"), spec)
        if differences:
            print(f"trainingrun {name} exists in namespace {ns} with a different spec; nothing was changed:")
            print("\n".join(f"  {line}" for line in differences))
            print(f"  (to change it: kubectl apply -f {args.file}; to start over: delete it, then submit)")
            return Exit.CONFLICT
        print(f"trainingrun {name} exists in namespace {ns} ({describe(run)}); not created again", flush=True)
    if not args.follow:
        print(f"follow it: python -m trainop submit {args.file} --follow -n {ns}")
        return Exit.OK
    try:
        return _follow(cluster, ns, run, args.timeout)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; {name} goes on in namespace {ns}. Re-attach: "
            f"python -m trainop submit {args.file} --follow -n {ns}  (or: python -m trainop logs {name} "
            f"--follow -n {ns})",
            file=sys.stderr,
        )
        return Exit.INTERRUPTED


def _existing(cluster: Cluster, ns: str, name: str) -> Mapping[str, Any]:
    run = cluster.get_run(ns, name)
    if run is None:
        raise ClusterError(f"trainingrun {name} not found in namespace {ns}")
    return run


def wait(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.kubeconfig, args.context)
    ns = args.namespace or cluster.namespace
    _existing(cluster, ns, args.name)
    follower = Follower(args.name, QuietDisplay(), status_epochs=False)
    code, line = follow(cluster, ns, follower, logs=False, worker0=False, timeout=args.timeout)
    print(line, flush=True)
    return code


def logs(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.kubeconfig, args.context)
    ns = args.namespace or cluster.namespace
    run = _existing(cluster, ns, args.name)
    walk_forward, multi = _shape(run)
    display = PlainDisplay(sys.stdout)
    follower = Follower(args.name, display, status_epochs=False, logs_only=True, raw=args.raw)
    if args.follow:
        if walk_forward:
            raise UsageError(
                f"{args.name} is a walk-forward run (one pod per fold): logs --follow follows one trainer; "
                f"see its folds with: python -m trainop logs {args.name} (once they ran), or "
                f"kubectl logs -f -n {ns} -l cryptopredictor.dev/run={args.name} --max-log-requests 10"
            )
        code, _ = follow(cluster, ns, follower, logs=True, worker0=multi, timeout=None)
        return code
    pods = cluster.run_pods(ns, args.name)
    if walk_forward:
        chosen = [
            p
            for index in sorted({pod_index(p) for p in pods} - {None}, key=lambda i: int(str(i)))
            if (p := pick_pod([q for q in pods if pod_index(q) == index], worker0=False, done={}))
        ]
    else:
        one = pick_pod(pods, worker0=multi, done={})
        chosen = [one] if one else []
    if not chosen:
        raise ClusterError(f"no started pod of {args.name} to read ({describe(run)})")
    for pod in chosen:
        if walk_forward:
            display.line(f"== fold {pod_index(pod)}: pod {pod['metadata']['name']}")
        for line in cluster.pod_log(ns, pod, follow=False):
            follower.log(line)
    return Exit.OK


def list_runs(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.kubeconfig, args.context)
    ns = None if args.all_namespaces else (args.namespace or cluster.namespace)
    runs = cluster.list_runs(ns)
    if not runs:
        print(f"No TrainingRuns in {'any namespace' if ns is None else f'namespace {ns}'}.")
    else:
        print(list_table(runs, datetime.now(timezone.utc), all_namespaces=ns is None))
    return Exit.OK


COMMANDS = {"submit": submit, "logs": logs, "wait": wait, "list": list_runs}


def main(argv: Sequence[str]) -> int:
    """A subcommand's exit code (``client_follow.Exit``); ``operator`` is left to ``__main__``."""
    args = parser().parse_args(list(argv))  # argparse's own errors: exit 2 with the usage
    try:
        return int(COMMANDS[args.command](args))
    except SpecError as err:
        for line in spec_error_lines(err):
            print(f"trainop: {line}", file=sys.stderr)
        return Exit.BAD_INPUT
    except UsageError as err:
        print(f"trainop: {err}", file=sys.stderr)
        return Exit.BAD_INPUT
    except ClusterError as err:
        print(f"trainop: {err}", file=sys.stderr)
        return Exit.API_ERROR
    except (ApiException, HTTPError, OSError) as exc:
        print(f"trainop: {api_error(exc)}", file=sys.stderr)
        return Exit.API_ERROR
    except KeyboardInterrupt:
        print("trainop: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
