"""Errors a user can cause. The CLI prints them as one line; nothing here wraps internal bugs."""


class HybridLMError(ValueError):
    """Base class for user-facing errors: the message names what is wrong and what is allowed."""


class ConfigError(HybridLMError):
    """An invalid model / run configuration."""


class CheckpointError(HybridLMError):
    """A checkpoint directory that cannot be read or written as asked."""
