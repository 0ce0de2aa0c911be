"""`HybridLMEval`: a hybridlm model as an lm-evaluation-harness model, registered as `hybridlm`.

lm-eval hands the model text requests; `TemplateLM` splits (context, continuation) into tokens the same way
for every causal model, and this class scores them:

- loglikelihood: requests sorted by length (longest first), batched with RIGHT padding. Padding after a
  sequence never changes the logits before it in a causal model (attention, Mamba's causal conv and scan,
  per-token MoE routing), so no attention mask is needed. Inputs longer than `max_length` keep their last
  `max_length` tokens, as lm-eval's `hf` model does.
- loglikelihood_rolling: lm-eval's disjoint rolling windows of `max_length` tokens, scored as above (all
  windows of all documents are sorted and batched together) and summed per document.
- generate_until: prompts grouped by generation settings, longest first, batched with LEFT padding and
  `attention_mask` (each row generates what it would alone; `pad_prompts = False` would instead batch only
  prompts of one token length); greedy or sampled with `HybridLM.generate`, stopped at the tokenizer's EOS and
  cut at the first stop string.

Log-probabilities are taken over the model's `vocab_size` ids (ids added only to pad the embedding to a
multiple are never a tokenizer's output).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from hybridlm.errors import HybridLMError
from hybridlm.eval import MODEL_NAME
from hybridlm.eval.tokenizer import load_hf_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
eval_logger = logging.getLogger(__name__)
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")


def _positive_int(name: str, value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise HybridLMError(f"{name} must be a positive integer, got {value!r}")
    return n


@register_model(MODEL_NAME)
class HybridLMEval(TemplateLM):
    """model_args: pretrained (checkpoint directory, preset or config file; or a HybridLM), tokenizer (directory
    or tokenizer.json; or a transformers tokenizer; default: the one saved with the model), batch_size,
    max_length (default: the config's max_seq_len), max_gen_toks (256), device (cpu), dtype (float32),
    add_bos_token, seed (random weights of a preset and sampling)."""

    # Generation batches prompts of any length with left padding and `attention_mask` (HybridLM.generate
    # computes each row as if alone). False: a batch holds prompts of one token length, no padding.
    pad_prompts = True

    def __init__(self, pretrained=None, tokenizer=None, batch_size=1, max_length=None, max_gen_toks=256,
                 device="cpu", dtype="float32", add_bos_token=None, seed=0, max_batch_size=None):
        super().__init__()
        from hybridlm.model import HybridLM

        if pretrained is None:
            raise HybridLMError("the hybridlm lm-eval model needs pretrained=SOURCE (a checkpoint directory, a "
                                "preset or a config file)")
        if isinstance(pretrained, HybridLM):
            self.model = pretrained
        else:
            from hybridlm.cli.generate import load_model

            self.model, _ = load_model(str(pretrained), int(seed))
        if tokenizer is None and isinstance(pretrained, str | Path):
            from hybridlm.locate import locate

            tokenizer = locate(pretrained).tokenizer()  # the one saved with the model, if any
        if tokenizer is None:
            raise HybridLMError("the hybridlm lm-eval model needs tokenizer=PATH (a tokenizer directory or "
                                "tokenizer.json) unless one is saved with the model")
        self.tokenizer = load_hf_tokenizer(tokenizer) if isinstance(tokenizer, str | Path) else tokenizer
        if dtype not in DTYPES:
            raise HybridLMError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self._device = torch.device(device or "cpu")
        if self._device.type == "cuda" and not torch.cuda.is_available():  # lm-eval's CLI asks for cuda by default
            eval_logger.warning("CUDA is not available: the hybridlm model runs on the CPU")
            self._device = torch.device("cpu")
        self.model = self.model.to(device=self._device, dtype=DTYPES[dtype]).eval()
        self.vocab_size = self.model.config.vocab_size
        if len(self.tokenizer) > self.vocab_size:
            raise HybridLMError(f"the tokenizer has {len(self.tokenizer)} ids but the model only "
                                f"{self.vocab_size}: they do not belong together")
        if self.tokenizer.eos_token_id is None:
            raise HybridLMError("the tokenizer has no EOS token (set eos_token in its tokenizer_config.json)")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_length = _positive_int("max_length", max_length or self.model.config.max_seq_len)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.add_bos_token = None if add_bos_token is None else str(add_bos_token).lower() in ("1", "true", "yes")
        self.seed = int(seed)

    # ----- tokens -----
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token a context-free request is conditioned on: BOS, else EOS (as lm-eval's `hf` model)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
            bos = self.tokenizer.decode(self.prefix_token_id)
            if has_bos_prefix(string, bos):  # the text already starts with BOS
                add_special_tokens = False
        extra = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **extra)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def get_model_info(self) -> dict:
        return {"model_num_parameters": self.model.num_parameters(),
                "model_dtype": str(next(self.model.parameters()).dtype), "model_describe": self.model.config.describe()}

    # ----- scoring -----
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: (cache key or None, context ids, continuation ids) -> (sum of log p(continuation), greedy?)."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        results = []
        with tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood") as bar:
            for chunk in order.get_batched(n=self.batch_size):
                for (key, _, _), answer in zip(chunk, self._score_batch(chunk), strict=True):
                    if key is not None:
                        self.cache_hook.add_partial("loglikelihood", key, answer)
                    results.append(answer)
                bar.update(len(chunk))
        return order.get_original(results)

    @torch.no_grad()
    def _score_batch(self, chunk) -> list[tuple[float, bool]]:
        for _, context, continuation in chunk:
            if not context or not continuation or len(continuation) > self.max_length:
                raise HybridLMError(f"a request has {len(context)} context and {len(continuation)} continuation "
                                    f"tokens; needs >= 1 and 1..{self.max_length} (max_length)")
        rows = [(context + continuation)[-(self.max_length + 1):][:-1] for _, context, continuation in chunk]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)  # right padding: never seen by earlier positions
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        # logits only from the earliest continuation position on (the vocabulary projection is the costly part)
        keep = max(width - len(r) + len(c) for r, (_, _, c) in zip(rows, chunk, strict=True))
        logits = self.model(ids.to(self._device), logits_to_keep=keep).logits[..., : self.vocab_size]
        logprobs = logits.float().log_softmax(-1).cpu()
        out = []
        for i, (r, (_, _, continuation)) in enumerate(zip(rows, chunk, strict=True)):
            end = keep - (width - len(r))  # row i's last real position, within the kept logits
            lp = logprobs[i, end - len(continuation): end]
            target = torch.tensor(continuation)
            out.append((float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm), strict=True):
            totals[i] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ----- generation -----
    def _generation_batches(self, prompts: list[list[int]], settings: list[str]) -> Iterator[list[int]]:
        """Indices of requests, batched: one generation setting per batch, longest prompts first, and one
        prompt length per batch unless `pad_prompts`."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (ids, setting) in enumerate(zip(prompts, settings, strict=True)):
            groups[(setting,) if self.pad_prompts else (setting, len(ids))].append(i)
        for members in groups.values():
            members.sort(key=lambda i: -len(prompts[i]))
            for start in range(0, len(members), self.batch_size):
                yield members[start: start + self.batch_size]

    def _generation_settings(self, gen_kwargs: dict) -> dict:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        unknown = sorted(set(kwargs) - set(GEN_KWARGS))
        if unknown:
            raise HybridLMError(f"generation setting(s) {', '.join(unknown)} not supported by hybridlm; "
                                f"allowed: {', '.join(GEN_KWARGS)}")
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        max_new = int(kwargs["max_gen_toks"])
        if max_new >= self.max_length:
            raise HybridLMError(f"max_gen_toks={max_new} must be smaller than max_length={self.max_length}")
        sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0.0)) > 0
        return {"until": handle_stop_sequences(kwargs.get("until"), eos=eos), "max_new_tokens": max_new,
                "do_sample": sample, "temperature": float(kwargs.get("temperature") or 1.0) if sample else 1.0,
                "top_k": int(kwargs.get("top_k") or 0), "top_p": float(kwargs.get("top_p") or 1.0)}

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        settings = [self._generation_settings(gen_kwargs) for _, gen_kwargs in (req.args for req in requests)]
        prompts = [self.tok_encode(context)[-(self.max_length - s["max_new_tokens"]):]
                   for (context, _), s in zip((req.args for req in requests), settings, strict=True)]
        keys = [json.dumps(s, sort_keys=True) for s in settings]
        texts: list[str | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until") as bar:
            for batch in self._generation_batches(prompts, keys):
                s = settings[batch[0]]
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), self.eot_token_id, dtype=torch.long)  # left padding
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]):] = 1
                padding = {"attention_mask": mask.to(self._device)} if self.pad_prompts else {}
                out = self.model.generate(ids.to(self._device), max_new_tokens=s["max_new_tokens"],
                                          do_sample=s["do_sample"], temperature=s["temperature"], top_k=s["top_k"],
                                          top_p=s["top_p"], eos_token_id=self.eot_token_id, seed=self.seed,
                                          **padding)
                for row, i in enumerate(batch):
                    text = postprocess_generated_text(self.tok_decode(out[row, width:].tolist()), s["until"], None)
                    texts[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        return texts
