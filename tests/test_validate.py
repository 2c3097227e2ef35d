"""`merger validate` and `merger merge` on bad recipes: exit 2, one clear line per problem, no output folder."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()


def slerp(a, b, **extra):
    config = {
        "merge_method": "slerp",
        "base_model": str(a),
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 4]}, {"model": str(b), "layer_range": [0, 4]}]}],
        "parameters": {"t": 0.5},
        "dtype": "float32",
    }
    config.update(extra)
    return config


def ties(base, *models, **extra):
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"density": 0.5, "weight": 0.5}} for m in models],
        "parameters": {"normalize": True},
        "dtype": "float32",
    }
    config.update(extra)
    return config


def bad_recipes(m):
    """(name, recipe, expected field, expected words). Each must fail validation with exit 2."""
    a, b = m["a"], m["b"]
    return [
        ("bad_yaml", "merge_method: slerp\nslices: [\n", "line", "not valid YAML"),
        ("not_a_mapping", "- just\n- a list\n", "", "must be a YAML mapping"),
        ("unknown_method", slerp(a, b, merge_method="slurp"), "merge.merge_method", "unknown merge method 'slurp'"),
        ("missing_model", slerp(a, "/nope/model"), "merge.slices.0.sources.1.model", "no such model folder"),
        ("hub_model_offline", slerp(a, "someone/not-cached-model"), "merge.slices.0.sources.1.model", "HF_HUB_OFFLINE"),
        (
            "range_past_end",
            {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(a), "layer_range": [0, 9]}]}]},
            "merge.slices.0.sources.0.layer_range",
            "not inside",
        ),
        (
            "range_reversed",
            {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(a), "layer_range": [3, 1]}]}]},
            "merge.slices.0.sources.0.layer_range",
            "start < end",
        ),
        ("mismatched_arch", slerp(a, m["mistral"]), "merge", "mismatched architectures"),
        (  # mergekit ignores an unknown parameter, so merger notes it; strict makes the note an error
            "unknown_parameter_strict",
            {"merge": slerp(a, b, parameters={"t": 0.5, "tt": 1}), "strict": True},
            "merge.parameters.tt",
            "not a parameter of slerp",
        ),
        ("missing_parameter", slerp(a, b, parameters={}), "merge.parameters", "needs parameter 't'"),
        (
            "bad_sweep_path",
            {"merge": slerp(a, b), "sweep": {"merge.paramters.t": [0.1]}},
            "sweep.merge.paramters.t",
            "does not exist",
        ),
        ("empty_sweep_axis", {"merge": slerp(a, b), "sweep": {"merge.parameters.t": []}}, "sweep", "has no values"),
        ("unknown_section", {"merge": slerp(a, b), "sweeep": {}}, "sweeep", "unknown field"),
        ("no_merge", {"sweep": {"merge.parameters.t": [1]}}, "merge", "exactly one of"),
        (
            "too_many_slerp_inputs",
            {
                "merge_method": "slerp",
                "base_model": str(a),
                "parameters": {"t": 0.5},
                "slices": [{"sources": [{"model": str(x), "layer_range": [0, 4]} for x in (a, b, m["c"])]}],
            },
            "merge.slices.0.sources",
            "exactly 2",
        ),
        ("shape_mismatch", ties(a, b, m["wide"]), "merge.models", "hidden_size differs"),
        ("vocab_mismatch", ties(a, b, m["extra_vocab"]), "merge.models", "vocab_size differs"),
        ("pickle_only", ties(a, b, m["pickled"]), "merge.models.1.model", "--allow-pickle"),
        ("bad_dtype", slerp(a, b, dtype="float8"), "merge.dtype", "unknown dtype"),
        (
            "dus_overlap_too_big",
            {"depth_upscale": {"model": str(a), "overlap": 3}},
            "depth_upscale.overlap",
            "more than half",
        ),
        (
            "dus_missing_model",
            {"depth_upscale": {"model": "/nope", "overlap": 1}},
            "depth_upscale.model",
            "no such model folder",
        ),
        (
            "bad_dpo_section",
            {"merge": slerp(a, b), "dpo": {"data": "x.jsonl", "loss_type": "sigmoidal"}},
            "dpo.loss_type",
            "unknown loss_type",
        ),
        (
            "models_and_slices",
            {
                "merge_method": "linear",
                "models": [{"model": str(a)}],
                "slices": [{"sources": [{"model": str(a), "layer_range": [0, 4]}]}],
            },
            "merge",
            "Exactly one of",
        ),
    ]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    from tiny import edit_config

    mistral = tmp_path_factory.mktemp("mistral") / "m"
    from tiny import make_tiny_llama

    make_tiny_llama(mistral, seed=9)
    edit_config(mistral, architectures=["MistralForCausalLM"], model_type="mistral")
    return {**tiny_models, "mistral": mistral}


def write(tmp_path: Path, recipe) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_at_least_ten_kinds_of_bad_recipe(models):
    assert len(bad_recipes(models)) >= 10


@pytest.mark.parametrize("index", range(23))
def test_bad_recipe_validate_and_merge(tmp_path, models, index):
    name, recipe, field, words = bad_recipes(models)[index]
    path = write(tmp_path, recipe)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, (name, result.output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, (name, result.stderr)
    assert any(str(path) in line and field in line and words in line for line in lines), (name, lines)
    assert "Traceback" not in result.output + result.stderr

    out = tmp_path / "out"
    result = runner.invoke(app, ["merge", str(path), "--out", str(out)])
    assert result.exit_code == 2, (name, result.output)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), name


def test_good_recipes_validate_with_table_and_config(tmp_path, models):
    recipe = {"merge": slerp(models["a"], models["b"]), "sweep": {"merge.parameters.t": [0.25, 0.75]}}
    result = runner.invoke(app, ["validate", str(write(tmp_path, recipe)), "--show-config"])
    assert result.exit_code == 0, result.output
    assert "Candidates" in result.stdout and "2 candidate(s) valid" in result.stdout
    assert "merge_method: slerp" in result.stdout and "t: 0.25" in result.stdout


def test_untied_lm_head_is_noted_not_refused(tmp_path, models):
    result = runner.invoke(app, ["validate", str(write(tmp_path, slerp(models["a"], models["untied"])))])
    assert result.exit_code == 0, result.output
    assert "lm_head is tied in some inputs only" in result.stderr


def test_tokenizer_source_reconciles_vocab(tmp_path, models):
    recipe = ties(models["a"], models["b"], models["extra_vocab"], tokenizer_source="union")
    result = runner.invoke(app, ["validate", str(write(tmp_path, recipe))])
    assert result.exit_code == 0, result.stderr


def test_allow_pickle_accepts_pickled_model(tmp_path, models):
    path = write(tmp_path, ties(models["a"], models["b"], models["pickled"]))
    assert runner.invoke(app, ["validate", str(path), "--allow-pickle"]).exit_code == 0


def test_merge_refuses_nonempty_out_without_force(tmp_path, models):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    path = write(tmp_path, slerp(models["a"], models["b"]))
    result = runner.invoke(app, ["merge", str(path), "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_merge_needs_candidate_when_sweeping(tmp_path, models):
    recipe = {"merge": slerp(models["a"], models["b"]), "sweep": {"merge.parameters.t": [0.25, 0.75]}}
    path = write(tmp_path, recipe)
    result = runner.invoke(app, ["merge", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--candidate" in result.stderr
    result = runner.invoke(app, ["merge", str(path), "--out", str(tmp_path / "o"), "--candidate", "deadbeef00"])
    assert result.exit_code == 2 and "no candidate 'deadbeef00'" in result.stderr


@pytest.mark.parametrize(
    "args, words", [(["--shard-size", "lots"], "not a size"), (["--device", "tpu"], "not one of cpu, cuda, auto")]
)
def test_merge_bad_flags(tmp_path, models, args, words):
    path = write(tmp_path, slerp(models["a"], models["b"]))
    result = runner.invoke(app, ["merge", str(path), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and words in result.stderr


def test_tiny_merge_writes_complete_folder(tmp_path, models):
    recipe = {"merge": slerp(models["a"], models["b"]), "sweep": {"merge.parameters.t": [0.25, 0.75]}}
    path = write(tmp_path, recipe)
    from merger.config.recipe import expand

    second = expand(path)[1]
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(path), "--out", str(out), "--candidate", second.id])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "mergekit_config.yml",
        "merger_recipe.yaml",
        "merger_candidate.json",
        "chat_template.jinja",
    } <= names
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["parameters"]["t"] == 0.75
