"""The trainer's one exception hierarchy: what went wrong decides the exit code, not which module noticed it.

Why a module of its own (torch-free, imported by the spec model and so by the operator too): a Job retries
exit codes 1 and 3 and fails at once on 2 and 4, so an error's *category* is part of the API. Each category is
one base class here, with its code; the modules raise subclasses of these (``trainer.api.manifest.SpecError``,
``trainer.candles.DataError``, ``trainer.storage.StorageError``, the checkpoint errors...), and
``trainer.cli.EXIT_CODES`` maps the categories to codes in one table. Anything outside the hierarchy is a bug
and ends with a traceback and exit 1, never as "invalid input".

A class belongs to exactly one category (a test checks that no class matches two rows of the table):
mixing in ``ValueError`` or ``FileNotFoundError`` for callers that catch those is fine, mixing two
categories is not.
"""

from __future__ import annotations

from typing import ClassVar

from trainer.api.exitcodes import ExitCode


class TrainerError(Exception):
    """Base of the errors a user can act on; the message is one readable line (or one line per problem)
    naming the flag, field or file and what is allowed. Raise a category below, never this class."""

    exit_code: ClassVar[ExitCode] = ExitCode.CRASH
    #: Printed before the message (``error: data: ...``); empty for none.
    prefix: ClassVar[str] = ""


class ConfigError(TrainerError):
    """What was asked cannot be done: a spec field, a flag, an environment variable, the machine (``--device
    cuda`` without a GPU), a malformed URI, a checkpoint of another architecture. Retrying cannot help."""

    exit_code = ExitCode.INVALID_CONFIG


class InputError(TrainerError):
    """A data or checkpoint file that cannot be used as it is (the message names the file, and the row where
    there is one). Retrying cannot help."""

    exit_code = ExitCode.INVALID_CONFIG


class StorageUnavailable(TrainerError):
    """Storage cannot be used now: unreachable, credentials refused, bucket missing, down for longer than the
    upload deadline. The Job retries; the message names the endpoint and bucket, never a credential."""

    exit_code = ExitCode.STORAGE_ERROR
    prefix = "storage"


class NaNLoss(TrainerError):
    """The loss became NaN or infinite: retrying from the same checkpoint would repeat it."""

    exit_code = ExitCode.NAN_LOSS


class PeerLost(TrainerError):
    """Distributed runs: a collective or the rendezvous failed or timed out because another worker died or is
    unreachable. A symptom: the operator names the worker that failed with another code, and the gang restarts."""

    exit_code = ExitCode.PEER_LOST
    prefix = "distributed"


class Preempted(TrainerError):
    """SIGTERM: the run checkpointed and stopped; the Job's next pod resumes."""

    exit_code = ExitCode.PREEMPTED


# --- configuration errors that belong to no other module --------------------------------------------------------


class UsageError(ConfigError):
    """A command line that argparse refuses (unknown flag, bad choice, missing argument)."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class DeviceUnavailable(ConfigError):
    """``--device cuda`` / ``training.device: cuda`` on a machine without a usable CUDA device."""
