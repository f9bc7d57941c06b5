"""crypto-price-predictor trainer: a TFT-style multi-step forecaster for daily crypto candles.

This package's top level must stay torch-free: the operator imports ``trainer.api.spec`` without torch installed.
"""

__version__ = "0.1.0"
