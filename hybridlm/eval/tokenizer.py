"""The transformers tokenizer lm-eval works with, from the paths hybridlm's other commands accept."""

from __future__ import annotations

from pathlib import Path

from hybridlm.data.errors import TokenizerError


def load_hf_tokenizer(path: str | Path):
    """A `PreTrainedTokenizerFast` from a tokenizer directory (as saved by `save_pretrained`, e.g. by
    `hybridlm data tokenizer`) or a bare tokenizer.json (its EOS found as `hybridlm.data.tokenizer` does)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from hybridlm.data.tokenizer import eos_token_id, load_tokenizer

    p = Path(path)
    if p.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except Exception as e:  # transformers raises many kinds; the user needs the first line
            raise TokenizerError(f"cannot read tokenizer directory {p}: {str(e).splitlines()[0]}") from e
    backend = load_tokenizer(p)  # a tokenizer.json file, or a one-line error
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    eos = eos_token_id(backend, p)
    if eos is not None:
        tok.eos_token = backend.id_to_token(eos)
    return tok
