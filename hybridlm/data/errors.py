"""User-facing errors of the data stage (all are `HybridLMError`s, printed by the CLI as one line)."""

from hybridlm.errors import HybridLMError


class DataError(HybridLMError):
    """Input that cannot be processed as asked (missing path, no supported files, bad option)."""


class MissingTextColumnError(DataError):
    """No record of the whole dataset has the requested text field."""


class TokenizerError(DataError):
    """A tokenizer path that cannot be read."""
