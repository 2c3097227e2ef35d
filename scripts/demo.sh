#!/usr/bin/env bash
# The offline demo on SmolLM2-135M-Instruct: prepare the model, make a DPO-refined sibling, check every demo
# recipe, then sweep a SLERP t grid between the two plus a depth-up-scaled + DPO candidate, and keep the best;
# then a pipeline (the grid's best 2 refined with DPO, each child kept only if it beats its parent), SOLAR's
# whole recipe (up-scale -> continued pretraining -> SFT -> DPO), a merge-back (DPO children merged back with their
# parents, WARP-style) and a chain of merges (Beagle-style: the best merge merged again, then DPO), each one sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
merger=.venv/bin/merger
$merger models prepare smollm2 --link models
if [ ! -d models/smollm2-135m-instruct-dpo ]; then
  $merger dpo models/smollm2-135m-instruct --data merge_recipes/data/demo_arithmetic_prefs.jsonl \
    --out models/smollm2-135m-instruct-dpo --epochs 2 --batch-size 4 --lr 1e-4 --max-length 128 --device cpu
fi
if [ ! -d models/smollm2-135m-instruct-uf ]; then  # a third sibling, for the chain of merges
  $merger dpo models/smollm2-135m-instruct --data ../shared/evaldata/preferences/ultrafeedback_binarized_train.jsonl \
    --out models/smollm2-135m-instruct-uf --max-steps 24 --batch-size 2 --lr 2e-4 --max-length 256 --device cpu
fi
$merger validate merge_recipes/demo-*.yaml
$merger sweep merge_recipes/demo-smollm2-slerp.yaml merge_recipes/demo-smollm2-dus.yaml --out demo-out/sweep --device cpu --fresh
$merger sweep merge_recipes/demo-smollm2-pipeline.yaml --out demo-out/pipeline --device cpu --fresh
$merger sweep merge_recipes/demo-smollm2-solar.yaml --out demo-out/solar --device cpu --fresh
$merger sweep merge_recipes/demo-smollm2-warp.yaml --out demo-out/warp --device cpu --fresh
$merger sweep merge_recipes/demo-smollm2-beagle.yaml --out demo-out/beagle --device cpu --fresh
