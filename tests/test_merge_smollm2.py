"""Real merges of SmolLM2-135M-Instruct: SLERP, TIES and SOLAR-style DUS, checked against mergekit-yaml."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from merger.cli import app

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def variants(smollm2, tmp_path_factory) -> dict[str, Path]:
    """Two lightly perturbed copies of SmolLM2, standing in for fine-tunes of one base."""
    root = tmp_path_factory.mktemp("variants")
    weights = load_file(smollm2 / "model.safetensors")
    found = {}
    for seed in (1, 2):
        folder = root / f"smollm2-ft{seed}"
        shutil.copytree(smollm2, folder)
        g = torch.Generator().manual_seed(seed)
        noisy = {k: v + 0.001 * v.float().std() * torch.randn(v.shape, generator=g) for k, v in weights.items()}
        save_file(noisy, folder / "model.safetensors", metadata={"format": "pt"})
        found[f"ft{seed}"] = folder
    return found


def configs(smollm2: Path, variants: dict[str, Path]) -> dict[str, dict]:
    base, ft1, ft2 = str(smollm2), str(variants["ft1"]), str(variants["ft2"])
    return {
        "slerp": {
            "merge_method": "slerp",
            "base_model": base,
            "slices": [{"sources": [{"model": base, "layer_range": [0, 30]}, {"model": ft1, "layer_range": [0, 30]}]}],
            "parameters": {
                "t": [
                    {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                    {"value": 0.5},
                ]
            },
            "dtype": "float32",
        },
        "ties": {
            "merge_method": "ties",
            "base_model": base,
            "models": [
                {"model": base},
                {"model": ft1, "parameters": {"density": 0.5, "weight": 0.5}},
                {"model": ft2, "parameters": {"density": 0.5, "weight": 0.5}},
            ],
            "parameters": {"normalize": True},
            "dtype": "float32",
        },
        "dus": {"depth_upscale": {"model": base, "overlap": 8, "dtype": "float32"}},
    }


def answer(folder: Path, question: str) -> str:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = {}
    for f in sorted(folder.glob("*.safetensors")):
        found.update(load_file(f))
    return found


@pytest.mark.parametrize("kind, layers", [("slerp", 30), ("ties", 30), ("dus", 44)])
def test_real_merge_matches_mergekit_and_talks(tmp_path, smollm2, variants, kind, layers):
    recipe = tmp_path / f"{kind}.yaml"
    recipe.write_text(yaml.safe_dump(configs(smollm2, variants)[kind], sort_keys=False))
    ours = tmp_path / "ours"
    result = CliRunner().invoke(app, ["merge", str(recipe), "--out", str(ours)])
    assert result.exit_code == 0, result.output + result.stderr

    model = AutoModelForCausalLM.from_pretrained(ours)
    assert model.config.num_hidden_layers == layers
    assert len(model.model.layers) == layers
    assert "Paris" in answer(ours, "What is the capital of France?")

    # The same resolved config through mergekit's own CLI gives the same tensors, bit for bit.
    reference = tmp_path / "reference"
    subprocess.run(
        [
            str(BIN / "mergekit-yaml"),
            str(ours / "mergekit_config.yml"),
            str(reference),
            "--clone-tensors",
            "--no-write-model-card",
        ],
        check=True,
        capture_output=True,
    )
    ref, got = tensors(reference), tensors(ours)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name


def test_killed_merge_leaves_no_output(tmp_path, smollm2):
    recipe = tmp_path / "dus.yaml"
    recipe.write_text(yaml.safe_dump({"depth_upscale": {"model": str(smollm2), "overlap": 8}}))
    out = tmp_path / "out"
    cmd = [str(BIN / "merger"), "merge", str(recipe), "--out", str(out), "--shard-size", "20MB"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".out.tmp-*/*.safetensors")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.tmp-*/*.safetensors")), "the merge never started writing shards"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()

    # Running it again completes, and clears what the killed run left beside the target.
    subprocess.run(cmd, check=True, capture_output=True)
    assert (out / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_a_preserving_up_scale_of_smollm2_computes_what_smollm2_computes(smollm2, tmp_path):
    """`depth_upscale.preserve`: 30 -> 44 layers whose repeated ones start as identities; on 32 held-out texts the
    up-scaled model's logits equal SmolLM2's within 1e-3 (a plain up-scale's do not)."""
    import json

    from conftest import EVALDATA

    from merger.config.recipe import expand
    from merger.merge.run import merge_in_memory

    texts = [json.loads(line)["text"][:300] for line in (EVALDATA / "text" / "heldout.jsonl").open()][:32]
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    with torch.inference_mode():
        source = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
        expected = source(**batch).logits
        for preserve in (True, False):
            recipe = tmp_path / f"dus-{preserve}.yaml"
            dus = {"model": str(smollm2), "overlap": 8, "dtype": "float32", "preserve": preserve}
            recipe.write_text(yaml.safe_dump({"depth_upscale": dus}))
            [candidate] = expand(recipe)
            model = merge_in_memory(candidate, device="cpu", digest=False).model
            assert model.config.num_hidden_layers == 44
            largest = (model(**batch).logits - expected).abs()[batch["attention_mask"].bool()].max().item()
            assert (largest < 1e-3) is preserve, largest
