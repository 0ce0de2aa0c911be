"""The layer-kind registry: one spec per token, read by model, planner and bench; nothing else
branches on a token's letter."""

import ast
from pathlib import Path

import pytest
import torch
from _plan_helpers import count_flops

import hybridlm
from hybridlm import HybridLM, ModelConfig
from hybridlm.bench.blocks import BLOCKS
from hybridlm.config import pattern
from hybridlm.config.presets import tiny_presets
from hybridlm.kinds import KINDS
from hybridlm.plan import flops

PACKAGE = Path(hybridlm.__file__).parent
ALLOWED = {PACKAGE / "config" / "pattern.py"} | set((PACKAGE / "kinds").glob("*.py"))


def test_registry_and_pattern_table_name_the_same_kinds():
    assert set(KINDS) == set(pattern.TOKENS)
    assert {t: k.name for t, k in KINDS.items()} == pattern.TOKEN_NAMES
    assert set(BLOCKS.values()) == set(KINDS)  # every kind has a block benchmark


def _letter_branches(path: Path) -> list[str]:
    """Comparisons of anything with a pattern token written as a literal: `x == "m"`, `t in ("r", "m")`."""
    tokens = set(KINDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            if any(isinstance(v, ast.Constant) and v.value in tokens for v in values):
                found.append(f"{path}:{node.lineno}")
    return found


def test_no_code_outside_the_registry_branches_on_a_token_letter():
    hits = [h for p in sorted(PACKAGE.rglob("*.py")) if p not in ALLOWED for h in _letter_branches(p)]
    assert hits == []


def test_the_check_would_catch_a_letter_branch(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(kind):\n    if kind == 'm':\n        return 1\n    return kind in ('r', 'a')\n")
    assert len(_letter_branches(bad)) == 2


@pytest.mark.parametrize("name", tiny_presets())
def test_flops_stay_exact_on_a_single_ssd_chunk(name):
    """Sequences within one SSD chunk: the chunk's final state and the zero start state need no
    gradient, which the Mamba2 spec's backward accounts for."""
    cfg = ModelConfig.from_preset(name)
    torch.manual_seed(0)
    model = HybridLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 5))
    train, _ = count_flops(lambda: model(ids).logits.sum().backward())
    assert flops(cfg, 5, batch=2, device="cpu").train_per_token * 10 == pytest.approx(train, rel=1e-9)


def test_model_blocks_carry_their_spec():
    cfg = ModelConfig.from_preset("jamba-tiny")
    model = HybridLM(cfg)
    assert [b.spec.token for b in model.layers] == [t for t in cfg.tokens if not KINDS[t].call]
    assert cfg.n_layers == sum(KINDS[t].mixer for t in cfg.tokens)
