import json
import subprocess
import sys

from typer.testing import CliRunner

from hybridlm.cli import app

runner = CliRunner()


def test_generate_from_preset_json():
    res = runner.invoke(app, ["generate", "mamba2-tiny", "--prompt-ids", "5 6 7", "-n", "6", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["prompt_ids"] == [5, 6, 7] and len(out["new_ids"]) == 6


def test_generate_from_checkpoint_matches_python_api(tmp_path):
    import torch

    from hybridlm import HybridLM, ModelConfig

    model = HybridLM(ModelConfig.from_preset("zamba2-tiny")).eval()
    model.save_pretrained(tmp_path / "ckpt")
    expected = model.generate(torch.tensor([[9, 8, 7]]), 5)[0, 3:].tolist()
    res = runner.invoke(app, ["generate", str(tmp_path / "ckpt"), "--prompt-ids", "9,8,7", "-n", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["new_ids"] == expected


def test_every_command_has_help():
    for args in (["--help"], ["generate", "--help"], ["models", "--help"]):
        assert runner.invoke(app, args).exit_code == 0


def test_user_mistake_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "hybridlm", "generate", "no-such-model"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "hybridlm", "generate", "mamba2-tiny", "--prompt-ids", "1 x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--prompt-ids" in proc.stderr and "Traceback" not in proc.stderr
    for args in (["generate", "--bogus"], ["generate", "mamba2-tiny", "-n", "0"], ["no-such-command"]):
        proc = subprocess.run([sys.executable, "-m", "hybridlm", *args], capture_output=True, text=True)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, proc.stderr)


def test_generate_text_with_a_local_tokenizer(tmp_path):
    from hybridlm.data.tokenizer import load_tokenizer, train_tokenizer

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"the cat number {i} sat on the mat"}) + "\n" for i in range(200)))
    train_tokenizer([corpus], tmp_path / "tok", vocab_size=300)
    res = runner.invoke(app, ["generate", "zamba2-tiny", "--prompt", "the cat", "--tokenizer", str(tmp_path / "tok"),
                              "-n", "5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    tok = load_tokenizer(tmp_path / "tok")
    assert out["prompt_ids"] == tok.encode("the cat").ids and out["text"] == tok.decode(out["new_ids"])
