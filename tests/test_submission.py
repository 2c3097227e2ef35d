"""Submission prep on real SmolLM2 outputs: model card vs the journal, license rules, preflight, export."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import EVALDATA, HUB
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from merger.cli import app
from merger.core.hf import front_matter
from merger.publish.licenses import derive_license

runner = CliRunner()


def invoke(*args, code=0):
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == code, result.output + result.stderr
    return result


@pytest.fixture(scope="module")
def outputs(smollm2, smollm2_variant, tmp_path_factory):
    """A small SLERP sweep's best (merged) and that model refined with DPO."""
    root = tmp_path_factory.mktemp("submission")
    recipe = root / "slerp.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge": {
                    "merge_method": "slerp",
                    "base_model": str(smollm2),
                    "dtype": "float32",
                    "parameters": {"t": 0.5},
                    "slices": [
                        {
                            "sources": [
                                {"model": str(smollm2), "layer_range": [0, 30]},
                                {"model": str(smollm2_variant), "layer_range": [0, 30]},
                            ]
                        }
                    ],
                },
                "sweep": {"merge.parameters.t": [0.3, 0.7]},
                "eval": {
                    "tasks": ["merger_arithmetic", "arc_challenge"],
                    "limit": 6,
                    "num_fewshot": {"arc_challenge": 0},
                    "data_dir": str(HUB),
                },
                "select": {"report_items": 6},
            }
        )
    )
    invoke("sweep", recipe, "--out", root / "sweep", "--device", "cpu")
    pairs = [
        json.loads(line)
        for line in (EVALDATA / "preferences" / "hh_rlhf_harmless_base_test.jsonl").read_text().splitlines()[:40]
    ]
    pairs = [p for p in pairs if len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) < 300][:4]
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    invoke(
        "dpo",
        root / "sweep" / "best",
        "--data",
        data,
        "--out",
        root / "dpo",
        "--max-steps",
        "2",
        "--max-length",
        "128",
        "--lr",
        "1e-5",
        "--device",
        "cpu",
        "--against",
        "merger_arithmetic",
    )
    invoke(
        "eval",
        root / "dpo",
        "--tasks",
        "merger_arithmetic",
        "--limit",
        "6",
        "--json",
        root / "dpo_eval.json",
        "--device",
        "cpu",
    )
    invoke("card", root / "dpo", "--scores", root / "dpo_eval.json")
    return {"root": root, "best": root / "sweep" / "best", "dpo": root / "dpo"}


def test_best_card_matches_the_journal(outputs):
    best = outputs["best"]
    meta = front_matter(best / "README.md")
    assert meta["license"] == "apache-2.0", "SmolLM2 is apache-2.0, and so is its merge"
    assert "merge" in meta["tags"] and "HuggingFaceTB/SmolLM2-135M-Instruct" in meta["base_model"]
    [leader] = [r for r in json.loads((outputs["root"] / "sweep" / "leaderboard.json").read_text())[:1]]
    reported = leader["reported"]["tasks"]
    results = meta["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {"allenai/ai2_arc", "merger_arithmetic"}
    for r in results:
        task = "arc_challenge" if r["dataset"]["type"] == "allenai/ai2_arc" else "merger_arithmetic"
        assert r["metrics"][0]["value"] == round(reported[task] * 100, 2)
    assert meta["model-index"][0]["name"] == f"sweep-{leader['id']}"
    text = (best / "README.md").read_text()
    assert text.split("---", 2)[2].lstrip().startswith(f"# sweep-{leader['id']}")
    assert "not the full leaderboard run" in text and "merge_method: slerp" in text


def test_dpo_card_states_data_and_decontamination(outputs):
    meta = front_matter(outputs["dpo"] / "README.md")
    assert {"merge", "dpo"} <= set(meta["tags"]) and meta["license"] == "apache-2.0"
    text = (outputs["dpo"] / "README.md").read_text()
    assert "## Training" in text and "1. **DPO** of" in text and "4 checked" in text
    summary = json.loads((outputs["root"] / "dpo_eval.json").read_text())["tasks"]["merger_arithmetic"]
    [result] = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == round(summary["acc,none"] * 100, 2)
    assert "not used to select this model" in text


@pytest.mark.parametrize(
    "licenses, expected, warned",
    [
        ({"a": "apache-2.0", "b": "cc-by-nc-4.0"}, "cc-by-nc-4.0", "non-commercial"),
        ({"a": "apache-2.0", "b": "llama2"}, "llama2", None),
        ({"a": "apache-2.0", "b": None}, "other", "unknown"),
        ({"a": "apache-2.0", "b": "my-own-license"}, "other", "unknown"),
        ({"a": "cc-by-nc-sa-4.0", "b": None}, "cc-by-nc-sa-4.0", "non-commercial"),
        ({"a": "mit", "b": "apache-2.0"}, None, None),
    ],
)
def test_license_derivation(licenses, expected, warned):
    license_id, warnings = derive_license(licenses)
    if expected:
        assert license_id == expected
    else:
        assert license_id in ("mit", "apache-2.0") and not warnings
    if warned:
        assert any(warned in w for w in warnings)


@pytest.mark.parametrize("which", ["best", "dpo"])
def test_preflight_passes_real_outputs(outputs, which):
    result = invoke("preflight", outputs[which])
    assert "fail" not in result.stdout


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_preflight_catches_planted_faults(outputs, tmp_path):
    best = outputs["best"]
    faults = {}

    nan = _copy(best, tmp_path / "nan")
    [weights] = nan.glob("*.safetensors")
    tensors = load_file(weights)
    tensors["model.layers.3.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    faults[nan] = ("weights finite", "NaN or inf in model.layers.3.mlp.up_proj.weight")

    notok = _copy(best, tmp_path / "notok")
    (notok / "tokenizer.json").unlink()
    faults[notok] = ("tokenizer", "tokenizer.json (or tokenizer.model) is missing")

    pickled = _copy(best, tmp_path / "pickled")
    [weights] = pickled.glob("*.safetensors")
    torch.save(load_file(weights), pickled / "pytorch_model.bin")
    weights.unlink()
    faults[pickled] = ("safetensors only", "pickled weights present: pytorch_model.bin")

    vocab = _copy(best, tmp_path / "vocab")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(vocab)
    tok.add_tokens([f"<extra_{i}>" for i in range(10)])
    tok.save_pretrained(vocab)
    faults[vocab] = ("tokenizer", "tokens but the embedding has 49152 rows")

    for folder, (check, words) in faults.items():
        result = runner.invoke(app, ["preflight", str(folder)])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, (folder.name, result.output)
        assert len(errors) == 1 and f": {check}: " in errors[0] and words in errors[0], (folder.name, errors)


def test_export_round_trip(outputs, tmp_path):
    from merger.config.recipe import EvalSettings
    from merger.evaluate.evaluator import evaluate, make_lm
    from merger.evaluate.model import load_model

    exported = tmp_path / "export"
    invoke("export", outputs["best"], "--out", exported, "--dtype", "fp32", "--shard-size", "200MB")
    names = {p.name for p in exported.iterdir()}
    assert {
        "model.safetensors.index.json",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "README.md",
        "merger_scores.json",
    } <= names
    assert len(list(exported.glob("*.safetensors"))) >= 3
    assert front_matter(exported / "README.md")["model-index"][0]["name"] == "export"
    settings = EvalSettings(tasks=["arc_challenge"], limit=6, data_dir=str(HUB), num_fewshot=0)
    a = evaluate(make_lm(settings, *load_model(outputs["best"], "cpu")), settings, show_progress=False)
    b = evaluate(make_lm(settings, *load_model(exported, "cpu")), settings, show_progress=False)
    assert [i.metrics for i in a.items] == [i.metrics for i in b.items]
    assert all(max(abs(x - y) for x, y in zip(i.lls, j.lls)) < 1e-4 for i, j in zip(a.items, b.items))

    half = tmp_path / "bf16"
    invoke("export", outputs["best"], "--out", half)
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"

    result = runner.invoke(
        app, ["export", str(outputs["best"]), "--out", str(tmp_path / "x"), "--push-to-hub", "me/model"]
    )
    assert result.exit_code == 2 and "HF_HUB_OFFLINE" in result.stderr
    assert not (tmp_path / "x").exists(), "an upload that cannot happen is refused before any work"


def test_eval_results_for_a_whole_benchmark_split(outputs, tmp_path):
    """A whole split scored with the preset's protocol becomes an Eval Results file; a quick subset does not."""
    best = tmp_path / "best"
    shutil.copytree(outputs["best"], best)
    summary = tmp_path / "musr.json"
    args = ["--data-dir", HUB, "--device", "cpu", "--json", summary]
    invoke("eval", best, "--tasks", "leaderboard_musr,merger_arithmetic", "--limit", "40", *args)
    invoke("card", best, "--scores", summary)
    result = runner.invoke(app, ["export", str(best), "--out", str(tmp_path / "x"), "--eval-results"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "merger_arithmetic: not scored with a preset's protocol" in result.output
    files = list((tmp_path / "x" / ".eval_results").iterdir())
    assert [f.name for f in files] == ["leaderboard_musr.yaml"]
    [entry] = yaml.safe_load(files[0].read_text())
    scores = json.loads(summary.read_text())["tasks"]["leaderboard_musr"]
    assert scores["n"] == scores["n_total"] == 30 and scores["protocol"] == "openllm-v2"
    assert entry["dataset"] == {"id": "TAUR-Lab/MuSR", "task_id": "leaderboard_musr"}
    assert entry["value"] == round(scores["acc_norm,none"] * 100, 2) and "local copy" in entry["notes"]
