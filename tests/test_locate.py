"""One notion of a model location (preset, config file, exported model, checkpoint, run directory) in every command
that reads a model, and the tokenizer that travels with a trained model."""

import json

import pytest
import torch
import yaml
from cli_helpers import one_line_error, run_cli

from hybridlm.config import ModelConfig
from hybridlm.locate import locate

TINY_RUN = {
    "model": "zamba2-tiny",
    "data": {"sources": [{"path": "synth://web"}], "seq_len": 32, "eval_path": "synth://eval-qa", "eval_batches": 1},
    "schedule": {"warmup_steps": 1},
    "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2, "progress": False, "plots": False},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hybridlm.train import run_training

    out = tmp_path_factory.mktemp("locate") / "run"
    run_training(TINY_RUN, out)
    return out


def test_every_kind_of_location_gives_the_same_model(run, tmp_path):
    want = ModelConfig.from_preset("zamba2-tiny")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(want.to_dict()))
    (tmp_path / "run.yaml").write_text("model: zamba2-tiny\ntrain: {steps: 3}\n")
    cases = {
        "zamba2-tiny": "preset",
        str(tmp_path / "model.yaml"): "config",
        str(tmp_path / "run.yaml"): "config",
        str(run / "final"): "export",
        str(run / "checkpoints" / "step_00000002"): "checkpoint",
        str(run): "export",  # a finished run: its exported model
    }
    from hybridlm.plan.params import params

    for source, kind in cases.items():
        loc = locate(source)
        assert loc.kind == kind, source
        got = loc.config()  # an export's config.json spells some defaults out (n_kv_heads): same model
        assert (got.tokens, got.d_model, params(got).total) == (want.tokens, 64, params(want).total), source
    assert locate(run).run == run and locate(run / "checkpoints" / "step_00000002").run == run


def test_a_run_resumed_past_its_export_means_its_newest_checkpoint(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "steps": 2}))  # exported at 2, resumed to 4 since
    loc = locate(copy)
    assert loc.kind == "checkpoint" and loc.path == copy / "checkpoints" / "step_00000004"


def test_generate_reads_every_location_with_its_tokenizer(run, capsys):
    outs = {}
    for source in (run, run / "final", run / "checkpoints" / "step_00000004"):
        res = run_cli(capsys, "generate", source, "--prompt", "The capital of", "-n", "5", "--json")
        assert res.code == 0, res
        out = json.loads(res.out.strip().splitlines()[-1])
        assert "text" in out and len(out["new_ids"]) == 5
        assert f"tokenizer: {run / 'final' / 'tokenizer.json'}" in " ".join(res.err.split())
        outs[str(source)] = out["new_ids"]
    assert len({tuple(v) for v in outs.values()}) == 1  # final/ holds the last checkpoint's weights


def test_the_exported_model_carries_its_tokenizer(run):
    from transformers import AutoTokenizer

    from hybridlm.data.tokenizer import fingerprint, load_tokenizer
    from hybridlm.train.synthetic import synthetic_dir

    final = run / "final"
    assert (final / "tokenizer.json").is_file() and (final / "tokenizer_config.json").is_file()
    synthetic = load_tokenizer(synthetic_dir() / "tokenizer")
    assert fingerprint(load_tokenizer(final)) == fingerprint(synthetic)
    hf = AutoTokenizer.from_pretrained(str(final))  # usable by transformers as it is
    assert hf.encode("The capital of") == synthetic.encode("The capital of").ids


def test_pack_keeps_the_tokenizer_and_its_absolute_path(tmp_path, monkeypatch, capsys):
    from hybridlm.data.tokenizer import train_tokenizer

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"the cat number {i} sat on the mat"}) + "\n" for i in range(300)))
    train_tokenizer([corpus], tmp_path / "tok", vocab_size=300)
    monkeypatch.chdir(tmp_path)
    res = run_cli(capsys, "data", "pack", "c.jsonl", "-o", "packed", "-t", "tok")
    assert res.code == 0, res
    index = json.loads((tmp_path / "packed" / "index.json").read_text())
    assert index["tokenizer"] == str(tmp_path / "tok")
    copied = tmp_path / "packed" / "tokenizer" / "tokenizer.json"
    assert copied.read_bytes() == (tmp_path / "tok" / "tokenizer.json").read_bytes()
    (tmp_path / "tok" / "tokenizer.json").unlink()  # the shards still know their tokenizer
    from hybridlm.data.shards import TokenShardDataset

    assert TokenShardDataset(tmp_path / "packed").tokenizer_path() == copied


def test_anneal_continues_a_run_from_its_directory_export_or_checkpoint(run, tmp_path, capsys):
    from hybridlm.train import anneal_config

    plans = {}
    for source in (run, run / "final", run / "checkpoints" / "step_00000004"):
        cfg, plan = anneal_config(source, steps=2)
        plans[str(source)] = (plan["phase1_tokens"], cfg.schedule.lr, cfg.data.sources[0].path)
    assert len(set(plans.values())) == 1 and plans[str(run)][0] == 4 * 4 * 32
    res = run_cli(capsys, "anneal", "--from", run / "final", "-o", tmp_path / "p2", "--steps", "2", "--json")
    assert res.code == 0, res
    out = json.loads(res.out.strip().splitlines()[-1])
    assert out["eval_before"]["loss"] > 0 and out["steps"] == 2
    one_line_error(capsys, "anneal", "--from", "zamba2-tiny", "-o", tmp_path / "p3",
                   contains=("annealing continues a training run", "train.init_from"))


def test_plan_bench_and_init_from_take_any_location(run, tmp_path, capsys):
    res = run_cli(capsys, "plan", run / "checkpoints" / "step_00000002", "--json")
    assert res.code == 0 and json.loads(res.out)["params"]["total"] == 432_520
    res = run_cli(capsys, "plan", "compare", "zamba2-tiny", run, "--seq-len", "256", "--json")
    assert res.code == 0 and len(json.loads(res.out)) == 2
    from hybridlm import HybridLM
    from hybridlm.train import RunConfig, run_training

    cfg = RunConfig.from_dict({**TINY_RUN, "train": {**TINY_RUN["train"], "steps": 1, "init_from": str(run),
                                                      "export": False, "seed": 1}})
    run_training(cfg, tmp_path / "from-run")
    final = HybridLM.from_pretrained(run / "final")
    from hybridlm.train.checkpoint import load_checkpoint

    def distance(model):
        return max((a - b).abs().max().item() for a, b in zip(model.parameters(), final.parameters(), strict=True))

    started = HybridLM(ModelConfig.from_preset("zamba2-tiny"))
    torch.manual_seed(1)
    assert distance(HybridLM(ModelConfig.from_preset("zamba2-tiny"))) > 0.05  # seed 1's own init is far away
    load_checkpoint(tmp_path / "from-run" / "checkpoints" / "step_00000001", started, None, restore_rng=False)
    assert distance(started) < 0.005  # one Adam step (LR 3e-3) from the run's final weights


def test_run_config_paths_are_taken_from_the_config_file(run, tmp_path, monkeypatch, capsys):
    """model: FILE and data paths relative to the config's directory, stored absolute; the command runs elsewhere."""
    cfgdir = tmp_path / "configs"
    cfgdir.mkdir()
    (cfgdir / "small.yaml").write_text(yaml.safe_dump(ModelConfig.from_preset("zamba2-tiny").to_dict()))
    synth_web = __import__("hybridlm.train.synthetic", fromlist=["x"]).synthetic_dir() / "web"
    (cfgdir / "web").symlink_to(synth_web)
    (cfgdir / "run.yaml").write_text(
        "model: small.yaml\n"
        "data: {sources: [{path: web}], seq_len: 32, eval_path: null}\n"
        "train: {steps: 1, batch_size: 2, progress: false, plots: false, export: false}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = run_cli(capsys, "train", "../configs/run.yaml", "-o", "out")
    assert res.code == 0, res
    saved = yaml.safe_load((elsewhere / "out" / "config.yaml").read_text())
    assert saved["data"]["sources"][0]["path"] == str(cfgdir / "web")
    assert saved["model"]["d_model"] == 64 and saved["model"]["layers"]
    res = run_cli(capsys, "train", "../configs/run.yaml", "-o", "out2", "--data.sources", "[{path: web}]")
    assert res.code == 2 and str(elsewhere / "web") in res.err  # a path typed on the command line: from here


def test_location_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, "generate", tmp_path / "nowhere", contains=("is not a model", "presets:"))
    one_line_error(capsys, "generate", tmp_path / "empty", contains=("not a model", "run directory"))
    one_line_error(capsys, "generate", "zamba2-tiny", "--prompt", "hi", contains=("has none saved", "--tokenizer"))
    one_line_error(capsys, "generate", "zamba2-tiny", "--prompt", "hi", "--prompt-ids", "1",
                   contains=("give one prompt",))
    (tmp_path / "bad.yaml").write_text("model: no-such.yaml\n")
    one_line_error(capsys, "train", tmp_path / "bad.yaml", "-o", tmp_path / "o", contains=("model:", "no-such.yaml"))
    one_line_error(capsys, "plan", tmp_path / "empty", contains=("not a model",))


def test_convert_reads_a_run_and_keeps_its_tokenizer(run, tmp_path, capsys):
    from hybridlm import HybridLM

    res = run_cli(capsys, "convert", run / "checkpoints" / "step_00000004", tmp_path / "native", "--to", "hybridlm")
    assert res.code == 0, res
    assert (tmp_path / "native" / "tokenizer.json").read_bytes() == (run / "final" / "tokenizer.json").read_bytes()
    a, b = HybridLM.from_pretrained(tmp_path / "native"), HybridLM.from_pretrained(run / "final")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    one_line_error(capsys, "convert", "zamba2-tiny", tmp_path / "x", "--to", "hf", contains=("without weights",))
