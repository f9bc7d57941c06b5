"""Documented exit codes of ``python -m trainer``.

The operator's Job ``podFailurePolicy`` and its condition reasons key off these, so they are part of the API:
change them only together with ``operator/trainop/builders.py`` and the README's table.
"""

OK = 0
#: Unexpected crash (Python's default for an uncaught exception): retried by the Job.
CRASH = 1
#: The spec, manifest, flags or data are invalid: retrying cannot help, the Job fails at once.
INVALID_CONFIG = 2
#: Checkpoint storage unusable (bad credentials, missing bucket, down past the deadline): retried by the Job.
STORAGE_ERROR = 3
#: The loss became NaN/inf: retrying from the same checkpoint would repeat it, the Job fails at once.
NAN_LOSS = 4
#: SIGTERM (preemption, eviction, deletion): a checkpoint was written and uploaded; the pod's restart resumes.
PREEMPTED = 143
