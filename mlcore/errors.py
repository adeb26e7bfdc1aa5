"""Errors the model side raises; callers (the Django app, the CLI) catch these, never torch's."""


class ModelError(Exception):
    """Base of every mlcore model error."""


class CheckpointMissing(ModelError):
    """No checkpoint file at the configured path."""


class CheckpointCorrupt(ModelError):
    """The file exists but is not a readable botai checkpoint (truncated, foreign, wrong shapes)."""


class FeatureSetMismatch(ModelError):
    """The checkpoint was trained on features this code no longer computes."""


class InsufficientHistory(ModelError):
    """A symbol has fewer gap-free candles than the model needs."""


class InvalidCandles(ModelError):
    """A symbol's candles break the candle rules (mlcore.candles.validate_candles) or give
    non-finite features."""
