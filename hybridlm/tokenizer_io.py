"""Loading a tokenizer from a local directory (AutoTokenizer) or a tokenizer.json file."""

from __future__ import annotations

from pathlib import Path

from hybridlm.errors import HybridLMError


class _Wrapped:
    def __init__(self, tok):
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def load_tokenizer(path: str | Path):
    """Anything with encode(text) -> ids and decode(ids) -> text."""
    path = Path(path)
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            return _Wrapped(Tokenizer.from_file(str(path)))
        except Exception as err:
            raise HybridLMError(f"cannot read tokenizer file {path}: {str(err).splitlines()[0]}") from None
    if path.is_dir():
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except Exception as err:
            raise HybridLMError(f"cannot load a tokenizer from {path}: {str(err).splitlines()[0]}") from None
        return tok
    raise HybridLMError(f"tokenizer path not found: {path} (give a directory or a tokenizer.json)")
