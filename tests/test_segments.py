"""Several sequences per row (hybridlm.layers.segments): left-padded batches and packed documents give
exactly what each sequence gives alone, for every layer kind; and transformers' own batched generation
with left padding agrees."""

import pytest
import torch
from test_hf_parity import CASES, randomize

from hybridlm import HybridLM, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.errors import HybridLMError

SWA = {"name": "swa-tiny", "d_model": 32, "layers": "(m w r m)*2 a", "vocab_size": 64,
       "attention": {"n_heads": 4, "n_kv_heads": 2, "window": 4},
       "mamba2": {"d_state": 8, "headdim": 8, "chunk_size": 4}, "mamba1": {"d_state": 4}}
FAMILIES = tiny_presets() + ["swa"]


def _model(name):
    torch.manual_seed(0)
    cfg = ModelConfig(**SWA) if name == "swa" else ModelConfig.from_preset(name)
    if cfg.mamba2.chunk_size > 8:  # several SSD chunks per prompt, so resets fall inside and between chunks
        cfg = cfg.replace(**{"mamba2.chunk_size": 4})
    return HybridLM(cfg).eval()


def _left_pad(prompts, pad_id=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    return ids, mask


@pytest.mark.parametrize("name", FAMILIES)
def test_left_padded_batch_equals_each_prompt_alone(name):
    model = _model(name)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (11, 3, 7, 1)]
    ids, mask = _left_pad(prompts, pad_id=5)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, p in enumerate(prompts):
            alone = model(torch.tensor([p])).logits[0]
            torch.testing.assert_close(batched[i, -len(p):], alone, atol=1e-4, rtol=1e-4)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=9)
    for i, p in enumerate(prompts):
        alone = model.generate(torch.tensor([p]), max_new_tokens=9)[0, len(p):]
        assert out[i, ids.shape[1]:].tolist() == alone.tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_packed_documents_equal_the_documents_alone(name):
    model = _model(name)
    g = torch.Generator().manual_seed(2)
    docs = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in (6, 1, 9, 5)]
    row = torch.cat(docs)[None]
    seq_idx = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        packed = model(row, seq_idx=seq_idx).logits[0]
        alone = torch.cat([model(d[None]).logits[0] for d in docs])
        torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)
        # the loss: no token predicts the next document's first token
        loss = model(row, labels=row, seq_idx=seq_idx).loss
        nll = [torch.nn.functional.cross_entropy(model(d[None]).logits[0, :-1], d[1:], reduction="sum")
               for d in docs if len(d) > 1]
        expected = torch.stack(nll).sum() / sum(len(d) - 1 for d in docs)
    if model.config.n_layers and "e" not in model.config.tokens:  # MoE adds its balancing loss
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_packed_gradients_equal_the_documents_alone():
    model = _model("zamba2-tiny").train()
    docs = [torch.randint(0, 512, (n,)) for n in (7, 5)]
    row, seq_idx = torch.cat(docs)[None], torch.tensor([[0] * 7 + [1] * 5])
    model(row, labels=row, seq_idx=seq_idx).loss.backward()
    packed = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    total = sum(model(d[None], labels=d[None]).loss * (len(d) - 1) for d in docs) / 10
    total.backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(packed[k], p.grad, atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("name", ["zamba2-tiny", "jamba-tiny", "swa"])
def test_chunked_prefill_continues_the_last_segment(name):
    model = _model(name)
    vocab = model.config.vocab_size
    ids, mask = _left_pad([torch.randint(0, vocab, (n,)).tolist() for n in (9, 4)])
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = model.allocate_cache(2, ids.shape[1] + 4)
        first = model(ids[:, :6], cache=cache, attention_mask=mask[:, :6]).logits
        rest = model(ids[:, 6:], cache=cache).logits  # continues each row's segment
    real = mask.bool()
    torch.testing.assert_close(torch.cat([first, rest], 1)[real], full[real], atol=1e-4, rtol=1e-4)


def test_bad_masks_are_one_line():
    model = _model("mamba2-tiny")
    ids = torch.randint(0, 512, (2, 5))
    with pytest.raises(HybridLMError, match="left padding"):
        model.generate(ids, attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), max_new_tokens=2)
    with pytest.raises(HybridLMError, match="shape"):
        model(ids, attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("case", ["zamba2-2blocks-qkv-rope-groups", "mamba2", "llama"])
def test_batched_left_padded_generation_matches_transformers(case, tmp_path):
    torch.manual_seed(0)
    theirs = randomize(CASES[case]())
    theirs.generation_config.eos_token_id = None
    theirs.generation_config.pad_token_id = 0
    theirs.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    ids, mask = _left_pad([torch.randint(1, 96, (n,)).tolist() for n in (8, 3, 6)])
    with torch.no_grad():
        ref = theirs(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max().item() <= 1e-4
    expected = theirs.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=8), expected)


def test_trainer_document_ids_and_target_counts():
    from hybridlm.train.data import document_ids, target_count

    eos = 0
    ids = torch.tensor([[5, 6, 0, 7, 8, 0, 0, 9]])
    assert document_ids(ids, eos).tolist() == [[0, 0, 0, 1, 1, 1, 2, 3]]
    assert target_count(ids, eos) == 7 - 3  # the tokens after each EOS are not predicted
    assert target_count(ids, None) == 7


def test_training_with_document_mask_uses_the_eos_of_the_shards(tmp_path):
    from train_helpers import tiny_config

    from hybridlm.train import run_training
    from hybridlm.train.config import RunConfig
    from hybridlm.train.data import BatchStream

    short = {"train.steps": 2, "data.seq_len": 256}
    cfg = RunConfig.from_dict(tiny_config(**short))
    stream = BatchStream(cfg.data, cfg.train)
    assert stream.eos_id is not None and cfg.data.document_mask
    ids = torch.cat([m for step in range(2) for m in stream.micro_batches(step)])
    assert (ids[:, :-1] == stream.eos_id).any()  # the windows do cross documents
    on = run_training(cfg, tmp_path / "on")
    off = run_training(RunConfig.from_dict(tiny_config(**short, **{"data.document_mask": False})), tmp_path / "off")
    assert on["final_loss"] != off["final_loss"]
    assert BatchStream(RunConfig.from_dict(tiny_config(**{"data.document_mask": False})).data, cfg.train).eos_id is None
