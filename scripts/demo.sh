#!/usr/bin/env bash
# The offline demo: prepare SmolLM2, check every demo recipe, merge the demo recipes into demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
merger=.venv/bin/merger
$merger models prepare smollm2 --link models
$merger validate merge_recipes/demo-*.yaml
$merger merge merge_recipes/demo-smollm2-prune.yaml --out demo-out/prune --force
$merger merge merge_recipes/demo-smollm2-dus.yaml --out demo-out/dus --force
# Score the base model and both merges on the generated arithmetic task (needs no data; same items for all).
for model in models/smollm2-135m-instruct demo-out/prune demo-out/dus; do
  $merger eval "$model" --tasks arithmetic --limit 60 --device cpu
done
