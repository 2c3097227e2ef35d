#!/usr/bin/env bash
# The selection study behind the README's bench_selection figures: 11 sibling candidates of SmolLM2-135M-Instruct,
# each scored 0-shot on whole task files of the shared mirror, one `merger eval --items` file per candidate and
# task, then replayed by scripts/bench_selection.py.
#
#   bash scripts/selection_study.sh [OUT] [TASK ...]      # default: study-out, arc_challenge hellaswag
#   SET=methods bash scripts/selection_study.sh [OUT] [TASK ...]   # the second set (below), default: hellaswag
#
# Candidates: the model; its DPO-refined sibling (as scripts/demo.sh makes it); SLERPs between the two at t 0.25,
# 0.5 and 0.75; four noisy copies (Gaussian noise of 2%, 4%, 8% and 16% of each tensor's std); a depth up-scale to 32
# layers (overlap 14); and a second DPO refinement on UltraFeedback pairs. Idempotent: what exists is not redone.
# SET=methods: a sibling set of other merge methods over the same three models (the model and its two DPO
# siblings): TIES at densities 0.3/0.6/0.9, task arithmetic at weights 0.3/0.6/1.0, DARE-TIES 0.5, linear thirds,
# model_stock, and a SLERP between the two DPO siblings; item files under OUT/items-methods.
# About 3 minutes per candidate and task on 2 CPU cores (0-shot; Winogrande and ARC sit near chance for a 135M
# model, HellaSwag does not).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${1:-study-out}
shift || true
TASKS=("$@")
[ ${#TASKS[@]} -gt 0 ] || TASKS=(arc_challenge hellaswag)
DATA=${MERGER_DATA_DIR:-../shared/evaldata/hub}
PY=.venv/bin/python
merger=.venv/bin/merger
mkdir -p "$OUT/models" "$OUT/items" "$OUT/recipes"
score() {  # score FOLDER TASK FILE: every item of TASK, 0-shot, into FILE (skipped when FILE exists)
  [ -s "$3" ] && return
  mkdir -p "$(dirname "$3")"
  echo "scoring $1 on every item of $2"
  $merger eval "$1" --tasks "$2" --num-fewshot 0 --data-dir "$DATA" --device cpu --items "$3.tmp" >/dev/null
  mv "$3.tmp" "$3"
}
$merger models prepare smollm2 --link models >/dev/null
BASE=models/smollm2-135m-instruct
M=$OUT/models
[ -d models/smollm2-135m-instruct-dpo ] || $merger dpo $BASE --data merge_recipes/data/demo_arithmetic_prefs.jsonl \
  --out models/smollm2-135m-instruct-dpo --epochs 2 --batch-size 4 --lr 1e-4 --max-length 128 --device cpu
[ -d $M/dpo-ultrafeedback ] || $merger dpo $BASE --data ../shared/evaldata/preferences/ultrafeedback_binarized_train.jsonl \
  --out $M/dpo-ultrafeedback --max-steps 24 --batch-size 2 --lr 2e-4 --max-length 256 --device cpu
for t in 0.25 0.5 0.75; do
  [ -d $M/slerp-$t ] && continue
  cat >"$OUT/recipes/slerp-$t.yaml" <<EOF
merge_method: slerp
base_model: $PWD/$BASE
slices:
  - sources:
      - {model: $PWD/$BASE, layer_range: [0, 30]}
      - {model: $PWD/models/smollm2-135m-instruct-dpo, layer_range: [0, 30]}
parameters: {t: $t}
dtype: float32
EOF
  $merger merge "$OUT/recipes/slerp-$t.yaml" --out $M/slerp-$t
done
if [ ! -d $M/dus-32 ]; then
  printf 'depth_upscale: {model: %s, overlap: 14, dtype: float32}\n' "$PWD/$BASE" >"$OUT/recipes/dus-32.yaml"
  $merger merge "$OUT/recipes/dus-32.yaml" --out $M/dus-32
fi
for s in 2 4 8 16; do
  [ -d $M/noise-$s ] || $PY - "$BASE" "$M/noise-$s" "$s" <<'EOF'
import shutil, sys, torch
from safetensors.torch import load_file, save_file
base, out, pct = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 100
tmp = out + ".tmp"
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(base, tmp)
g = torch.Generator().manual_seed(int(pct * 1000))
w = load_file(f"{base}/model.safetensors")
w = {k: v + pct * v.float().std() * torch.randn(v.shape, generator=g) if v.ndim > 1 else v for k, v in w.items()}
save_file(w, f"{tmp}/model.safetensors", metadata={"format": "pt"})
shutil.move(tmp, out)
EOF
done
if [ "${SET:-}" = methods ]; then
  [ $# -gt 0 ] || TASKS=(hellaswag)
  DPO=$PWD/models/smollm2-135m-instruct-dpo UF=$PWD/$M/dpo-ultrafeedback
  three() {  # a mergekit config over the model and its two DPO siblings: method, then each model's parameters
    printf 'merge_method: %s\nbase_model: %s\ndtype: float32\nmodels:\n' "$1" "$PWD/$BASE"
    printf '  - model: %s\n' "$PWD/$BASE"
    printf '  - {model: %s, parameters: %s}\n' "$DPO" "$2" "$UF" "$2"
  }
  declare -A RECIPE=(
    [ties-0.3]="$(three ties '{density: 0.3, weight: 0.5}')" [ties-0.6]="$(three ties '{density: 0.6, weight: 0.5}')"
    [ties-0.9]="$(three ties '{density: 0.9, weight: 0.5}')" [ta-0.3]="$(three task_arithmetic '{weight: 0.3}')"
    [ta-0.6]="$(three task_arithmetic '{weight: 0.6}')" [ta-1.0]="$(three task_arithmetic '{weight: 1.0}')"
    [dare-0.5]="$(three dare_ties '{density: 0.5, weight: 0.5}')" [linear]="$(three linear '{weight: 1.0}' | sed 's|^  - model: \(.*\)$|  - {model: \1, parameters: {weight: 1.0}}|')"
    [model-stock]="$(three model_stock '{}')"
    [slerp-dpos]="$(printf 'merge_method: slerp\nbase_model: %s\ndtype: float32\nparameters: {t: 0.5}\nslices:\n  - sources:\n      - {model: %s, layer_range: [0, 30]}\n      - {model: %s, layer_range: [0, 30]}\n' "$DPO" "$DPO" "$UF")"
  )
  for name in "${!RECIPE[@]}"; do
    [ -d "$M/$name" ] && continue
    printf '%s\n' "${RECIPE[$name]}" >"$OUT/recipes/$name.yaml"
    $merger merge "$OUT/recipes/$name.yaml" --out "$M/$name"
  done
  for task in "${TASKS[@]}"; do
    for name in $(printf '%s\n' "${!RECIPE[@]}" | sort); do
      score "$M/$name" "$task" "$OUT/items-methods/$task/$name.jsonl"
    done
  done
  echo "items in $OUT/items-methods; replay: $PY scripts/bench_selection.py $OUT/items-methods/*/ --delta 1"
  exit 0
fi
declare -A FOLDER=([base]=$BASE [dpo-arith]=models/smollm2-135m-instruct-dpo)
for m in dpo-ultrafeedback slerp-0.25 slerp-0.5 slerp-0.75 dus-32 noise-2 noise-4 noise-8 noise-16; do FOLDER[$m]=$M/$m; done
for task in "${TASKS[@]}"; do
  for name in base dpo-arith dpo-ultrafeedback slerp-0.25 slerp-0.5 slerp-0.75 dus-32 noise-2 noise-4 noise-8 noise-16; do
    score "${FOLDER[$name]}" "$task" "$OUT/items/$task/$name.jsonl"
  done
done
echo "items in $OUT/items; replay: $PY scripts/bench_selection.py $OUT/items/*/ --delta 1"
