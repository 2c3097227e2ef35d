"""What mergekit accepts, merger accepts: notes for what it ignores, LoRA inputs, seeded random methods."""

import json
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny import edit_config, make_tiny_llama, make_tiny_lora
from typer.testing import CliRunner

from merger.cli import app
from merger.core.digest import folder_digest

runner = CliRunner()


def write(path: Path, recipe) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def slerp(a, b, **extra):
    config = {
        "merge_method": "slerp",
        "base_model": str(a),
        "dtype": "float32",
        "parameters": {"t": 0.5},
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 4]}, {"model": str(b), "layer_range": [0, 4]}]}],
    }
    config.update(extra)
    return config


def dare(base, *models, **extra):
    config = {
        "merge_method": "dare_ties",
        "base_model": str(base),
        "dtype": "float32",
        "parameters": {"normalize": True},
        "models": [{"model": str(m), "parameters": {"density": 0.5, "weight": 0.5}} for m in models],
    }
    config.update(extra)
    return config


def validate(*args):
    result = runner.invoke(app, ["validate", *map(str, args)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    return result, errors, notes


def test_ignored_parameters_and_keys_are_notes_with_a_hint(tmp_path, tiny_models):
    a, b = tiny_models["a"], tiny_models["b"]
    config = slerp(a, b, parameters={"t": 0.5, "embed_slerp": True, "tt": 1}, dype="bfloat16", tokenzer_source="union")
    path = write(tmp_path / "r.yaml", config)
    result, errors, notes = validate(path)
    assert result.exit_code == 0 and not errors, result.stderr
    text = "\n".join(notes)
    assert "merge.parameters.embed_slerp: 'embed_slerp' is not a parameter of slerp: mergekit ignores it" in text
    assert "merge.parameters.tt" in text and "did you mean 't'?" in text
    assert "merge.dype: unknown key 'dype': mergekit ignores it; did you mean 'dtype'?" in text
    assert "did you mean 'tokenizer_source'?" in text

    result, errors, _ = validate(path, "--strict")
    assert result.exit_code == 2 and len(errors) == 4 and all("(strict)" in e for e in errors)
    write(tmp_path / "s.yaml", {"merge": config, "strict": True})
    assert validate(tmp_path / "s.yaml")[0].exit_code == 2


def test_notes_show_in_merge_and_sweep_and_the_journal(tmp_path, tiny_models):
    a, b = tiny_models["a"], tiny_models["b"]
    recipe = write(tmp_path / "r.yaml", {"merge": slerp(a, b, dype="float32"), "eval": {"limit": 4}})
    result = runner.invoke(app, ["merge", str(recipe), "--out", str(tmp_path / "m"), "--device", "cpu"])
    assert result.exit_code == 0 and "did you mean 'dtype'?" in result.stderr
    result = runner.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert result.exit_code == 0 and "did you mean 'dtype'?" in result.stderr, result.stderr
    [(note,)] = sqlite3.connect(tmp_path / "s" / "journal.sqlite").execute("SELECT note FROM notes").fetchall()
    assert "merge.dype" in note


def test_extrapolating_values_are_noted_per_sweep_point(tmp_path, tiny_models):
    recipe = {"merge": slerp(tiny_models["a"], tiny_models["b"]), "sweep": {"merge.parameters.t": [-0.5, 0.5, 1.5]}}
    result, errors, notes = validate(write(tmp_path / "r.yaml", recipe))
    assert result.exit_code == 0 and len(notes) == 2
    assert any("t=-0.5" in n and "t -0.5: slerp interpolates" in n for n in notes)
    assert any("t=1.5" in n and "t 1.5:" in n for n in notes)


def test_legacy_model_prefix_says_what_changed(tmp_path, tiny_models):
    path = write(
        tmp_path / "r.yaml", slerp(tiny_models["a"], tiny_models["b"], tokenizer_source=f"model:{tiny_models['a']}")
    )
    result, errors, _ = validate(path)
    assert result.exit_code == 2 and len(errors) == 1
    assert "merge.tokenizer_source" in errors[0] and f"write '{tiny_models['a']}'" in errors[0]


def test_unknown_architecture_is_refused_before_any_work(tmp_path, tiny_models):
    foo = tmp_path / "foo"
    make_tiny_llama(foo, seed=3)
    edit_config(foo, architectures=["FooBarForCausalLM"], model_type="foobar")
    path = write(
        tmp_path / "r.yaml",
        {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(foo), "layer_range": [0, 4]}]}]},
    )
    result, errors, _ = validate(path)
    assert result.exit_code == 2 and len(errors) == 1
    assert "'FooBarForCausalLM'" in errors[0] and "known neither to mergekit nor to transformers" in errors[0]
    out = tmp_path / "out"
    assert runner.invoke(app, ["merge", str(path), "--out", str(out)]).exit_code == 2 and not out.exists()


@pytest.fixture(scope="module")
def loras(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    return [make_tiny_lora(root / f"lora{i}", tiny_models["a"], seed=i) for i in range(3)]


def test_lora_inputs_count_as_distinct_inputs_and_merge(tmp_path, tiny_models, loras):
    a = tiny_models["a"]
    config = {
        "merge_method": "model_stock",
        "base_model": str(a),
        "dtype": "float32",
        "models": [{"model": f"{a}+{lora}"} for lora in loras],
    }
    path = write(tmp_path / "r.yaml", config)
    result, errors, _ = validate(path)
    assert result.exit_code == 0, result.stderr
    out, cache = tmp_path / "out", tmp_path / "lora-cache"
    result = runner.invoke(app, ["merge", str(path), "--out", str(out), "--lora-merge-cache", str(cache)])
    assert result.exit_code == 0, result.stderr
    assert len(list(cache.iterdir())) == 3, "each model+adapter merged once into the chosen cache"
    merged, base = load_file(out / "model.safetensors"), load_file(a / "model.safetensors")
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )


def test_missing_or_pickled_adapter_is_refused(tmp_path, tiny_models, loras):
    a = tiny_models["a"]
    missing = write(tmp_path / "m.yaml", slerp(a, f"{a}+{tmp_path / 'nope'}"))
    result, errors, _ = validate(missing)
    assert result.exit_code == 2 and len(errors) == 1 and "no such adapter folder" in errors[0]

    pickled = tmp_path / "pickled-lora"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((loras[0] / "adapter_config.json").read_text())
    torch.save(load_file(loras[0] / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    path = write(tmp_path / "p.yaml", slerp(a, f"{a}+{pickled}"))
    result, errors, _ = validate(path)
    assert result.exit_code == 2 and "--allow-pickle" in errors[0]
    assert validate(path, "--allow-pickle")[0].exit_code == 0


def test_randomized_merges_are_seeded_and_recorded(tmp_path, tiny_models):
    path = write(tmp_path / "r.yaml", dare(tiny_models["a"], tiny_models["b"], tiny_models["c"]))
    outs = []
    for name, extra in (("one", []), ("two", []), ("seeded", ["--random-seed", "7"])):
        out = tmp_path / name
        result = runner.invoke(app, ["merge", str(path), "--out", str(out), *extra])
        assert result.exit_code == 0, result.stderr
        outs.append(out)
    assert folder_digest(outs[0]) == folder_digest(outs[1]), "the same recipe gives the same tensors"
    assert folder_digest(outs[0]) != folder_digest(outs[2]), "another seed draws other masks"
    first, seeded = (json.loads((o / "merger_candidate.json").read_text()) for o in (outs[0], outs[2]))
    assert seeded["random_seed"] == 7 and isinstance(first["random_seed"], int)
    assert first["id"] != seeded["id"], "an explicit seed is part of the candidate"


@pytest.mark.slow
def test_dare_sweep_saves_the_model_it_scored_and_repeats(tmp_path, tiny_models):
    recipe = {
        "merge": dare(tiny_models["a"], tiny_models["b"], tiny_models["c"]),
        "sweep": {"merge.models.0.parameters.density": [0.3, 0.7]},
        "eval": {"limit": 6},
        "select": {"keep": 2, "strategy": "grid"},
    }
    path = write(tmp_path / "r.yaml", recipe)
    boards = []
    for run in ("first", "second"):
        out = tmp_path / run
        result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.stderr
        db = sqlite3.connect(out / "journal.sqlite")
        scored = dict(
            db.execute(
                "SELECT candidate, json_extract(result, '$.digest') FROM stages WHERE stage = 'scored-weights'"
            ).fetchall()
        )
        saved = dict(
            db.execute("SELECT candidate, json_extract(result, '$.digest') FROM stages WHERE stage = 'save'").fetchall()
        )
        assert len(saved) == 2 and all(saved[c] == scored[c] for c in saved), "saved = scored, checked by the sweep"
        for cid, digest in saved.items():
            assert folder_digest(out / "candidates" / cid / "model") == digest
        boards.append([(r["id"], r["score"]) for r in json.loads((out / "leaderboard.json").read_text())])
    assert boards[0] == boards[1]


def test_sweep_scores_a_vocabulary_merge_from_disk(tmp_path, tiny_models):
    """mergekit builds a union vocabulary only while writing, so such a candidate is scored from disk."""
    config = {
        "merge_method": "ties",
        "base_model": str(tiny_models["a"]),
        "dtype": "float32",
        "tokenizer_source": "union",
        "parameters": {"normalize": True},
        "models": [
            {"model": str(tiny_models[m]), "parameters": {"density": 0.5, "weight": 0.5}} for m in ("b", "extra_vocab")
        ],
    }
    path = write(tmp_path / "r.yaml", {"merge": config, "eval": {"limit": 4}})
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert (out / "best" / "model.safetensors").exists()


def test_an_adapter_for_another_base_is_noted(tmp_path, tiny_models, loras):
    path = write(tmp_path / "r.yaml", slerp(tiny_models["a"], f"{tiny_models['b']}+{loras[0]}"))
    result, errors, notes = validate(path)
    assert result.exit_code == 0 and not errors
    assert any(f"was trained on '{tiny_models['a']}', here applied to '{tiny_models['b']}'" in n for n in notes), notes
