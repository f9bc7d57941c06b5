"""``python -m trainer.launch [torchrun options] -m trainer run ...``: torchrun, with exit codes that mean something.

Why not plain ``torchrun`` in a pod: the launcher is torchrun's own (``torch.distributed.run``, called here with
its own argument parser; nothing of it is re-implemented), but torchrun exits 1 for any worker failure and
prints a traceback on SIGTERM. The Job's ``podFailurePolicy`` and the operator's gang restart key off the
trainer's documented exit codes (``trainer.api.exitcodes``): 2 and 4 fail the run at once, 143 is a
checkpointed preemption, 5 is "lost its peers". So this wrapper exits with the code of the worker that failed
first (a worker that only lost its peers, 5, is the cause only when no other failed), 128+N after signal N,
and 5 when the rendezvous itself fails or times out (``--rdzv-conf timeout=S``), with one line saying so.

Two conveniences for Indexed Jobs: ``--node-rank`` defaults to ``$JOB_COMPLETION_INDEX``, and torchrun's
shutdown wait (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, how long the workers get to checkpoint after SIGTERM)
defaults to ``$TRAINER_SHUTDOWN_TIMEOUT_SECONDS`` when that is set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from trainer.api.exitcodes import ExitCode


def torchrun_args(argv: Sequence[str], env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The arguments for torchrun: ``--node-rank`` from ``$JOB_COMPLETION_INDEX`` unless given."""
    args = list(argv)
    given = any(
        a in ("--node-rank", "--node_rank") or a.startswith(("--node-rank=", "--node_rank=")) for a in args
    )
    index = env.get("JOB_COMPLETION_INDEX")
    if not given and index is not None:
        args = ["--node-rank", index, *args]
    return args


def exit_code(failures: dict[int, tuple[int, float]]) -> int:
    """The pod's exit code from torchrun's failures {rank: (exitcode, timestamp)}: the earliest failure that is
    not PEER_LOST, else the earliest; a negative exitcode (killed by signal N) becomes 128+N."""
    ordered = sorted(failures.values(), key=lambda f: f[1])
    causes = [f for f in ordered if f[0] != ExitCode.PEER_LOST] or ordered
    code = causes[0][0] if causes else ExitCode.CRASH
    return 128 - code if code < 0 else code


def _say(message: str, code: int) -> None:
    line = {"event": "error", "code": code, "message": message}
    print(json.dumps(line) if not sys.stderr.isatty() else f"error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    shutdown = os.environ.get("TRAINER_SHUTDOWN_TIMEOUT_SECONDS")
    if shutdown and "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in os.environ:
        os.environ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = shutdown
    argv = torchrun_args(sys.argv[1:] if argv is None else argv, os.environ)
    args = parse_args(argv)  # type: ignore[no-untyped-call]
    try:
        run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as err:
        return exit_code({rank: (f.exitcode, f.timestamp) for rank, f in err.failures.items()})
    except SignalException as err:
        return 128 + int(err.sigval)
    except (RendezvousError, DistError) as err:  # also DistNetworkError, DistStoreError (TCPStore timeouts)
        where = (
            f"{args.master_addr}:{args.master_port}" if args.rdzv_backend == "static" else args.rdzv_endpoint
        )
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        code = int(ExitCode.PEER_LOST)
        _say(f"rendezvous with {where} (node {args.node_rank} of {args.nnodes}) failed: {first}", code)
        return code
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
