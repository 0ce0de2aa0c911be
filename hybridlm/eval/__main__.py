"""`python -m hybridlm.eval ...`: lm-evaluation-harness's own command line with the `hybridlm` model registered.

lm-eval discovers no plugins (no entry points), so `lm_eval --model hybridlm` works only in a process that has
imported `hybridlm.eval`; this entry point is lm-eval's CLI after that import, with all of its options:

    python -m hybridlm.eval --model hybridlm --model_args pretrained=DIR,tokenizer=PATH \\
        --tasks TASKS --include_path TASK_DIR --batch_size 8 --output_path results/
"""

from __future__ import annotations


def main() -> None:
    import hybridlm.eval  # noqa: F401  (registers the model name `hybridlm`)

    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise SystemExit('error: lm-evaluation-harness is not installed (pip install -e ".[eval]")') from None
    cli_evaluate()


if __name__ == "__main__":
    main()
