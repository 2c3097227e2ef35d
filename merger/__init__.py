"""merger: declarative merge sweeps for open LLMs (mergekit merges, trl DPO, lm-eval-identical quick scoring)."""
