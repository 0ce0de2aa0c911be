"""The example run config printed by `hybridlm train --example-config` (kept as text for its comments)."""

EXAMPLE_CONFIG = """\
# hybridlm run config: `hybridlm train this.yaml -o runs/tiny`. Every field can be overridden on the command
# line as --section.key VALUE (values are YAML: --train.steps 50, --optim.betas "[0.9, 0.99]").
# This example runs as-is: the synthetic corpus (synth://...) is generated, tokenized and packed on first use.

model:                      # a preset, plus any ModelConfig field to override (or all fields, without preset);
                            # or model: FILE.yaml / a model or run directory (its architecture; see hybridlm models)
  preset: zamba2-tiny       # Zamba2-style: Mamba2 + 2 shared attention blocks with LoRA (0.43M params)

data:
  sources:                  # packed token-shard directories (hybridlm data pack) blended by weight; relative
                            # paths are taken from this file's directory
    - {path: synth://web, weight: 1.0}
  seq_len: 128              # tokens per sample (windows of seq_len + 1 cut from the token stream)
  eval_path: auto           # held-out shards, same tokenizer (auto: synth://eval for synth:// data, else none)
  eval_batches: 8           # batches per evaluation (0: the whole eval set)
  curriculum: []            # optional: [{step: 0, weights: [..]}, {step: 100, weights: [..]}], interpolated
  document_mask: true       # packed documents stay apart: no attention, state or prediction across an EOS

optim:                      # AdamW
  betas: [0.9, 0.95]
  eps: 1.0e-8
  weight_decay: 0.1
  no_decay_norms: true      # no weight decay on norm weights,
  no_decay_biases: true     # on biases and other 1-d parameters (the SSMs' A_log, D, dt bias never decay),
  no_decay_embeddings: true # and on embeddings

schedule:                   # LR as a function of the step: constant | cosine | linear | wsd | anneal
  name: cosine
  lr: 3.0e-3                # maximum LR (anneal: the phase-1 maximum; the peak is lr * peak_fraction)
  warmup_steps: 10          # linear warmup
  min_lr: 3.0e-4            # floor of the decay
  decay_shape: cosine       # wsd / anneal decay: linear | cosine | 1-sqrt | exponential
  decay_fraction: 0.2       # wsd: the last 20% of the steps decay
  peak_fraction: 0.75       # anneal only
  total_steps: null         # steps the schedule spans (null: train.steps); a --resume for more steps keeps it

train:
  steps: 150                # optimizer steps (~1 minute on one CPU core)
  batch_size: 16            # sequences per optimizer step (all ranks and micro-steps together)
  grad_accum: 1             # micro-steps per optimizer step (gradients weighted by token count)
  seed: 0                   # with phase, fixes the data order: resume needs only the step
  phase: 0                  # 0 pretraining, 1 annealing
  init_from: null           # start from the weights of a checkpoint, exported model or run directory
  checkpoint_every: 50      # steps between checkpoints (OUTPUT/checkpoints/step_N, written atomically)
  keep_last: 2              # checkpoints kept
  eval_every: 50            # steps between held-out evaluations
  log_every: 10             # progress-bar refresh (metrics.jsonl gets every step)
  max_bad_steps: 5          # non-finite loss/gradient: skip the step; abort after this many in a row
  grad_clip: 1.0            # max global gradient norm (0: off)
  activation_checkpointing: false
  device: auto              # auto | cpu | cuda
  dtype: auto               # auto: bf16 autocast on CUDA, fp32 on CPU
  threads: 1                # CPU threads (0: torch default); 1 is fastest for tiny models
  peak_flops: null          # for MFU (null: measured by a matmul probe on CPU, a table on GPUs)
  progress: true
  plots: true               # OUTPUT/plots/loss.png and lr.png
  export: true              # the final model in the Hugging Face layout, OUTPUT/final

distributed:                # N processes: `hybridlm train this.yaml -o OUT --nproc N` (or torchrun); N = dp x ep x tp
  mode: none                # data parallelism: none | ddp | zero1 | fsdp2 (FSDP2: bf16 compute, fp32 master on CUDA)
  backend: auto             # gloo on CPU, nccl on CUDA
  tp: 1                     # tensor parallelism: each layer split over tp ranks (Megatron's layout for Mamba2)
  ep: 1                     # expert parallelism: MoE experts split over ep data-parallel ranks (all-to-all)
  sequence_parallel: false  # with tp > 1: norms and the residual stream split along the sequence
"""
