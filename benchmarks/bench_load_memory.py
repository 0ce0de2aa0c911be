"""Peak host memory of loading a checkpoint in bfloat16: hybridlm's meta-device, tensor-by-tensor loader
against transformers' from_pretrained, against loading fp32 then casting, and against the eager way
(read every tensor, build the model with random init, load, cast: hybridlm's loader before issue 13).

A random-weight model is saved once in fp32 (mamba-130m by default: 516 MB of safetensors); each loader
then runs in a fresh subprocess, which reports its peak resident set (VmHWM) minus that of a bare
`import torch` process. The goal: at most 1.3x the bf16 weight bytes.

    python benchmarks/bench_load_memory.py [--preset mamba-130m] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hybridlm import HybridLM, ModelConfig

PEAK = """
def peak_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1])
"""

LOADERS = {
    "import torch (baseline)": "import torch",
    "import hybridlm": "import torch, hybridlm, hybridlm.hf.load",
    "hybridlm from_pretrained": "import torch\nfrom hybridlm import HybridLM\n"
                                "m = HybridLM.from_pretrained(DIR, dtype=DTYPE)\nassert m.embed.weight.dtype == DTYPE",
    "hybridlm fp32 load, then .to(dtype)": "import torch\nfrom hybridlm import HybridLM\n"
                                           "m = HybridLM.from_pretrained(DIR).to(DTYPE)",
    "eager: read all, build, load, cast": "import torch\nfrom hybridlm import HybridLM, hf\n"
                                          "from hybridlm.hf.io import read_config, read_state_dict, materialize\n"
                                          "from pathlib import Path\nd = Path(DIR); data = read_config(d)\n"
                                          "cfg = hf.config_from_hf(data)\n"
                                          "sd = {k: materialize(v).clone() for k, v in read_state_dict(d).items()}\n"
                                          "fmt = hf.checkpoint_format(data)\n"
                                          "sd = hf.FAMILIES[fmt].state_from_hf(sd, cfg) if fmt in hf.FAMILIES else sd\n"
                                          "m = HybridLM(cfg); m.load_state_dict(sd); del sd; m = m.to(DTYPE)",
    "transformers from_pretrained": "import torch\nfrom transformers import AutoModelForCausalLM\n"
                                    "m = AutoModelForCausalLM.from_pretrained(DIR, dtype=DTYPE)",
}


def measure(code: str, directory: Path, dtype: str) -> int:
    """Peak resident kB of a fresh Python running `code`."""
    script = f"{PEAK}\nDIR = {str(directory)!r}\nimport torch\nDTYPE = torch.{dtype}\n{code}\nprint(peak_kb())"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"loader failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mamba-130m")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--format", default="hf", help="checkpoint format to save the random model in")
    ap.add_argument("--max-shard-size", default=None, help="shard the saved checkpoint, e.g. 100MB")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "ckpt"
        torch.manual_seed(0)
        model = HybridLM(ModelConfig.from_preset(args.preset))
        n = model.num_parameters()
        model.save_pretrained(directory, format=args.format, max_shard_size=args.max_shard_size)
        del model
        on_disk = sum(p.stat().st_size for p in directory.iterdir())
        weight_kb = n * torch.empty(0, dtype=getattr(torch, args.dtype)).element_size() / 1024
        base = measure(LOADERS["import torch (baseline)"], directory, args.dtype)
        rows = []
        for name, code in LOADERS.items():
            if (name.startswith("transformers") or name.startswith("eager")) and args.format not in ("hf", "hybridlm"):
                continue
            peak = measure(code, directory, args.dtype)
            rows.append({"loader": name, "peak_MiB": peak / 1024, "above_baseline_MiB": (peak - base) / 1024,
                         "x_weights": (peak - base) / weight_kb})
    result = {"preset": args.preset, "parameters": n, "checkpoint_MiB": on_disk / 2**20, "format": args.format,
              "dtype": args.dtype, "weights_MiB": weight_kb / 1024, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset}: {n:,} parameters, fp32 checkpoint {on_disk / 2**20:.0f} MiB ({args.format}), "
          f"{args.dtype} weights {weight_kb / 1024:.0f} MiB; peak RSS (VmHWM) of a fresh process")
    print(f"{'loader':40} {'peak MiB':>9} {'above import torch':>19} {'x weights':>10}")
    for r in rows:
        print(f"{r['loader']:40} {r['peak_MiB']:9.0f} {r['above_baseline_MiB']:19.0f} {r['x_weights']:10.2f}")


if __name__ == "__main__":
    main()
