"""The TrainingRun operator (kopf). Run with ``kopf run -m trainop.handlers`` or ``python -m trainop``."""
