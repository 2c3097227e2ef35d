"""lm-eval's own command line with merger's model registered: `merger-lm-eval --model merger --model_args
pretrained=DIR --tasks ...` (or `python -m merger.evaluate.harness ...`) takes every `lm_eval` argument.

lm-eval 0.4 has no plugin discovery for models, so plain `lm_eval --model merger` cannot see a model registered by
another package; this entry point imports `merger.evaluate.lm` (which registers `merger`) and runs `lm_eval`.
"""

from __future__ import annotations

import merger.evaluate.lm  # noqa: F401  (registers the `merger` model with lm-eval)


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
