"""The torch-free contract the trainer and the operator share: the TrainingRun spec and status models, exit codes,
the error hierarchy that decides them, and the S3 endpoint precedence.

Why a package of its own: the operator image installs ``.[operator]`` (no torch, numpy or pandas) and copies only
this package of the trainer; nothing here may import torch or any module of ``trainer`` outside ``trainer.api``
(tests/trainer/api/test_torch_free.py checks it).
"""
