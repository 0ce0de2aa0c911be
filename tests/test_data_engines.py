"""The multi-process paths: local worker processes and datatrove's LocalPipelineExecutor give the same output as
one process; the CLI wires everything together."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.data.cli import app
from hybridlm.data.dedup import DedupConfig, run_dedup
from hybridlm.data.errors import DataError
from hybridlm.data.filters import run_filter
from hybridlm.data.partition import partition
from hybridlm.data.synth import generate_corpus


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("eng")
    generate_corpus(d / "c", seed=4, n_web=400, n_hq=0, n_eval=0)
    partition([d / "c" / "web.jsonl"], d / "parts", 3)
    return d


def records(folder):
    return sorted(json.dumps(json.loads(x), sort_keys=True) for p in folder.rglob("*.jsonl") for x in open(p))


def test_filter_local_processes_and_datatrove_agree(parts, tmp_path):
    from hybridlm.data.dt_steps import run_filter_datatrove

    r1 = run_filter([parts / "parts"], tmp_path / "one", workers=1)
    r2 = run_filter([parts / "parts"], tmp_path / "two", workers=2)
    r3 = run_filter_datatrove([parts / "parts"], tmp_path / "dt", workers=2)
    for r in (r2, r3):
        assert r["removed_by_filter"] == r1["removed_by_filter"]
        assert r["kept_documents"] == r1["kept_documents"] and r["input_documents"] == 400
    assert (
        records(tmp_path / "one" / "kept")
        == records(tmp_path / "two" / "kept")
        == records(tmp_path / "dt" / "kept")
    )
    assert records(tmp_path / "one" / "removed") == records(tmp_path / "dt" / "removed")
    # resumable: a second local run does not redo finished shards
    kept = next((tmp_path / "one" / "kept").rglob("*.jsonl"))
    t = kept.stat().st_mtime_ns
    run_filter([parts / "parts"], tmp_path / "one", workers=1)
    assert kept.stat().st_mtime_ns == t


def test_dedup_datatrove_executor_matches_default_run(parts, tmp_path):
    """datatrove's LocalPipelineExecutor with several tasks per stage (3 files, 3 band ranges, 2 workers) writes
    byte-identical kept/removed files and the same report as the default process-pool run."""
    cfg = DedupConfig(verify=True)
    local = run_dedup([parts / "parts"], tmp_path / "local", config=cfg, workers=1)
    dt = run_dedup(
        [parts / "parts"], tmp_path / "dt", config=cfg, workers=2, band_tasks=3, executor="local", memory=50_000
    )
    assert dt["removed_documents"] == local["removed_documents"] > 0
    for sub in ("kept", "removed"):
        a = {p.relative_to(tmp_path / "local"): p.read_bytes() for p in (tmp_path / "local" / sub).rglob("*.jsonl")}
        b = {p.relative_to(tmp_path / "dt"): p.read_bytes() for p in (tmp_path / "dt" / sub).rglob("*.jsonl")}
        assert a == b and len(a) == 3
    strip = lambda r: {k: v for k, v in r.items() if k != "execution"}  # noqa: E731
    assert strip(dt) == strip(local)
    assert dt["execution"]["executor"] == "local" and dt["execution"]["band_tasks"] == 3
    assert (tmp_path / "dt" / ".work" / "datatrove" / "buckets" / "completions").exists()  # datatrove ran the stages
    # the old entry point still works
    from hybridlm.data.dt_steps import run_dedup_datatrove

    again = run_dedup_datatrove([parts / "parts"], tmp_path / "dt2", config=cfg, workers=1)
    assert strip(again) == strip(local)


def test_cli_end_to_end(tmp_path):
    run = CliRunner().invoke
    r = run(app, ["synth", "-o", str(tmp_path / "s"), "--n-web", "150", "--n-hq", "40", "--n-eval", "10"])
    assert r.exit_code == 0, r.output
    r = run(app, ["filter", str(tmp_path / "s" / "web.jsonl"), "-o", str(tmp_path / "f"), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "min_length" in r.output
    r = run(
        app,
        [
            "dedup",
            str(tmp_path / "f" / "kept"),
            str(tmp_path / "s" / "hq.jsonl"),
            "-o",
            str(tmp_path / "d"),
            "--verify",
            "--rank",
            "hq",
            "--ngram",
            "5",
            "--bands",
            "16",
            "--rows",
            "8",
            "-j",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    # f/kept passes on its source (web), not a source named "kept"
    assert rep["params"]["rank"] == ["hq", "web"] and rep["params"]["ngram"] == 5
    assert rep["kept_documents"] + rep["removed_documents"] == rep["input_documents"]
    r = run(
        app,
        [
            "train-tokenizer",
            str(tmp_path / "s" / "hq.jsonl"),
            "-o",
            str(tmp_path / "t"),
            "--vocab-size",
            "300",
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(app, ["count", str(tmp_path / "s" / "hq.jsonl"), "-t", str(tmp_path / "t"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["documents"] == 40
    r = run(
        app, ["pack", str(tmp_path / "s" / "hq.jsonl"), "-o", str(tmp_path / "p"), "-t", str(tmp_path / "t")]
    )
    assert r.exit_code == 0 and (tmp_path / "p" / "index.json").exists()
    r = run(app, ["dedup", str(tmp_path / "s"), "-o", str(tmp_path / "x"), "--rank", "nope"])
    assert "unknown source" in str(r.exception)


FAKE_SBATCH = """#!{python}
# A stand-in for Slurm's sbatch: runs the submitted array job's tasks here, one after another, at submission (so a
# job submitted after its dependency finds it finished), and answers like sbatch.
import os, re, subprocess, sys
script = sys.argv[-1]
text = open(script).read()
m = re.search(r"#SBATCH --array=(\\d+)-(\\d+)", text)
env = dict(os.environ)
for a in sys.argv[1:-1]:
    if a.startswith("--export=ALL,"):
        env.update(kv.split("=", 1) for kv in a[len("--export=ALL,"):].split(","))
with open(os.environ["FAKE_SLURM_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:-1]) + " | " + re.search(r"--job-name=(\\S+)", text).group(1) + "\\n")
for i in range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]:
    task_env = {{**env, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_NODELIST": "localhost"}} if i is not None else env
    subprocess.run(["bash", script], env=task_env, check=True)
n = sum(1 for _ in open(os.environ["FAKE_SLURM_LOG"]))
print(f"Submitted batch job {{1000 + n}}")
"""

FAKE_SRUN = """#!/bin/bash
# srun [options] COMMAND...: run COMMAND here
while [[ "$1" == -* ]]; do if [[ "$1" == "-n" ]]; then shift; fi; shift; done
exec "$@"
"""


def test_dedup_on_slurm_executor_with_a_stand_in_scheduler(parts, tmp_path, monkeypatch):
    """The Slurm path end to end: datatrove writes and submits one array job per stage with dependencies; a
    stand-in sbatch runs each array task as Slurm would (SLURM_ARRAY_TASK_ID), and the output equals the default
    run's."""
    import os
    import sys

    from hybridlm.data.dt_steps import dedup_executors

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "srun").write_text(FAKE_SRUN)
    # the jobs' environment provides datatrove's entry points for this interpreter (venv_path/env_command do that
    # on a cluster)
    for tool in ("launch_pickled_pipeline", "merge_stats"):
        (bin_dir / tool).write_text(
            f'#!/bin/bash\nexec {sys.executable} -c "from datatrove.tools.{tool} import main; main()" "$@"\n'
        )
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && echo "$3"\n')
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    log = tmp_path / "slurm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    cfg = DedupConfig(verify=True)
    rep = run_dedup(
        [parts / "parts"],
        tmp_path / "slurm",
        config=cfg,
        band_tasks=2,
        executor="slurm",
        executor_options={"partition": "cpu", "time": "1:00:00", "sbatch_args": {"account": "data"}},
    )
    assert rep["submitted"] and len(rep["jobs"]) == 5
    submissions = log.read_text().splitlines()
    jobs = list(dict.fromkeys(s.split(" | ")[1] for s in submissions))  # each stage, then its stats-merging job
    assert jobs == [f"hybridlm-dedup-{s}" for s in ("signatures", "buckets", "components", "write", "report")]
    assert any("--dependency=afterok:" in s for s in submissions)
    script = (tmp_path / "slurm" / ".work" / "datatrove" / "signatures" / "launch_script.slurm").read_text()
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --account=data" in script and "--array=0-2" in script
    local = run_dedup([parts / "parts"], tmp_path / "local", config=cfg, workers=1)
    done = json.loads((tmp_path / "slurm" / "report.json").read_text())
    assert {k: v for k, v in done.items() if k != "execution"} == {k: v for k, v in local.items() if k != "execution"}
    # options that only another executor takes are a clear error
    with pytest.raises(DataError, match="does not take"):
        dedup_executors(rep_plan(tmp_path / "slurm"), "local", partition="cpu")
    with pytest.raises(DataError, match="--slurm-partition"):
        dedup_executors(rep_plan(tmp_path / "slurm"), "slurm", time="1:00:00")


def rep_plan(out):
    from hybridlm.data.dedup_tasks import DedupPlan

    return DedupPlan.load(out / ".work")


def test_cli_dedup_preset_memory_and_user_errors(tmp_path):
    """The command line end to end in a fresh process: a preset with an override and a memory budget; bad option
    values are one `error:` line with exit code 2."""
    import subprocess
    import sys

    src = tmp_path / "a.jsonl"
    words = " ".join(f"w{i}" for i in range(60))
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in [words, words + " end", "other text " * 20]))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "hybridlm", "data", "dedup", str(src), "-o", str(tmp_path / "o"),
                               "-j", "1", *args], capture_output=True, text=True, timeout=120)

    r = cli("--preset", "zyda1", "--memory", "64M", "--verify")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert (rep["params"]["bands"], rep["params"]["rows"], rep["params"]["verify"]) == (32, 4, True)
    assert rep["execution"]["memory_budget_mb"] == 64 and rep["removed_documents"] == 1
    for args, message in [
        (("--memory", "lots"), "--memory must be a size"),
        (("--preset", "zyda3"), "--preset must be one of"),
        (("--executor", "mpi"), "--executor must be one of"),
        (("--executor", "slurm"), "--executor slurm needs --slurm-partition and --slurm-time"),
        (("--slurm-partition", "cpu"), "need --executor slurm or ray"),
        (("--executor", "ray"), "needs Ray"),
    ]:
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
