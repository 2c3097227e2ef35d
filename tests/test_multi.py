"""mergekit-multi files, unchanged: `merger validate` checks every document before any merge, `merger merge` gives
the tensors `mergekit-multi` gives, and each named merge is made once into a folder named by its content, so a
changed document re-makes exactly what depends on it."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import make_tiny_llama
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent

# mergekit's own example (docs/multimerge.md), on tiny Llamas: a = Mistral-7B, b = BioMistral, c = Hermes-2-Pro,
# d = OpenHermes-2.5.
EXAMPLE = """name: first-merge
merge_method: linear
models:
  - model: {a}
  - model: {b}
parameters:
  weight: 0.5
---
name: second-merge
merge_method: slerp
base_model: first-merge  # Reference previous merge
models:
  - model: {c}
parameters:
  t: {t}
---
# Final merge (no name)
merge_method: dare_ties
base_model: {a}
models:
  - model: second-merge
    parameters:
      density: 0.6
      weight: 0.5
  - model: {d}
    parameters:
      density: 0.8
      weight: 0.5
"""


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update(load_file(file))
    return found


@pytest.mark.slow
def test_mergekit_multi_files_run_unchanged(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGER_HOME", str(tmp_path / "home"))
    d = make_tiny_llama(tmp_path / "d", seed=9)
    models = {k: tiny_models[k] for k in "abc"} | {"d": d}
    config = tmp_path / "multi.yaml"
    config.write_text(EXAMPLE.format(**models, t=0.5))

    result = runner.invoke(app, ["validate", str(config)])  # before any named merge exists
    assert result.exit_code == 0, result.output + result.stderr
    cmd = [str(BIN / "mergekit-multi"), str(config), "--intermediate-dir", str(tmp_path / "mk-inter")]
    subprocess.run(
        [*cmd, "--out-path", str(tmp_path / "mk"), "--random-seed", "7"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    result = runner.invoke(app, ["merge", str(config), "--out", str(tmp_path / "ours"), "--random-seed", "7"])
    assert result.exit_code == 0, result.output + result.stderr
    theirs, ours = tensors(tmp_path / "mk"), tensors(tmp_path / "ours")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)

    made = sorted(p.name for p in (tmp_path / "home" / "merges").iterdir())
    assert [m.rsplit("-", 1)[0] for m in made] == ["first-merge", "second-merge"]
    first = tmp_path / "home" / "merges" / made[0]
    stamp = (first / "config.json").stat().st_mtime_ns
    # the second document changed: the second merge is made again, the first (which it takes) is reused
    config.write_text(EXAMPLE.format(**models, t=0.3))
    assert runner.invoke(app, ["merge", str(config), "--out", str(tmp_path / "changed")]).exit_code == 0
    again = sorted(p.name for p in (tmp_path / "home" / "merges").iterdir())
    assert len(again) == 3 and set(made) < set(again) and again[0] == made[0]
    assert (first / "config.json").stat().st_mtime_ns == stamp, "an unchanged named merge is not made again"
    changed = tensors(tmp_path / "changed")
    assert any(not torch.equal(changed[k], ours[k]) for k in ours), "the final merge took the new second merge"


def test_a_multi_document_file_that_is_not_mergekit_multi_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: linear\nmodels: [{model: a}]\n---\nname: x\nmerge_method: linear\n---\nfoo: 1\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "each document a mergekit config" in result.stderr
    loop = tmp_path / "loop.yaml"
    loop.write_text(
        "name: x\nmerge_method: linear\nmodels: [{model: y}]\n---\nname: y\nmerge_method: linear\n"
        "models: [{model: x}]\n---\nmerge_method: linear\nmodels: [{model: x}]\n"
    )
    result = runner.invoke(app, ["validate", str(loop)])
    assert result.exit_code == 2 and "refers to itself: x -> y -> x" in result.stderr


@pytest.mark.slow
def test_a_sweep_over_an_upstream_document_shares_what_did_not_change(tiny_models, tmp_path, monkeypatch):
    """Named merges under `upstream:` in a merger recipe, one of them swept: every candidate takes the same first
    merge, made once; each point of the sweep makes its own second merge."""
    import yaml

    monkeypatch.setenv("MERGER_HOME", str(tmp_path / "home"))
    a, b, c = (str(tiny_models[k]) for k in "abc")
    recipe = {
        "upstream": {
            "first": {"merge_method": "linear", "models": [{"model": a}, {"model": b}], "parameters": {"weight": 0.5}},
            "second": {
                "merge_method": "slerp",
                "base_model": "first",
                "models": [{"model": c}],
                "parameters": {"t": 0.5},
            },
        },
        "merge": {
            "merge_method": "linear",
            "models": [{"model": "second"}, {"model": a}],
            "parameters": {"weight": 0.5},
        },
        "sweep": {"upstream.second.parameters.t": [0.2, 0.8]},
        "eval": {"tasks": ["merger_arithmetic"], "limit": 4},
        "select": {"strategy": "grid"},
    }
    path = tmp_path / "two-level.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "sweep"), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    made = sorted(p.name for p in (tmp_path / "home" / "merges").iterdir())
    assert [m.rsplit("-", 1)[0] for m in made] == ["first", "second", "second"]
    db = sqlite3.connect(tmp_path / "sweep" / "journal.sqlite")
    nodes = dict(db.execute("SELECT candidate, runs FROM stages WHERE stage = 'merge'"))
    assert nodes == dict.fromkeys(made, 1), "each named merge is a node of the journal, made once"


@pytest.mark.slow
def test_a_sakura_style_two_level_merge_from_the_shared_configs(tmp_path, monkeypatch):
    """Sakura-SOLAR's published SLERP (shared config 06, union tokenizer and gradients as published, on tiny local
    stand-ins) as a named first level, then merged again with one of its inputs: tensors equal mergekit-multi's."""
    import yaml
    from corpus import CORPUS, localize

    monkeypatch.setenv("MERGER_HOME", str(tmp_path / "home"))
    sakura = localize(CORPUS / "06-sakura-solar-slerp.yaml", tmp_path / "models")
    upstage = sakura["base_model"]
    second = {
        "merge_method": "slerp",
        "base_model": upstage,
        "slices": [
            {"sources": [{"model": upstage, "layer_range": [0, 48]}, {"model": "sakura", "layer_range": [0, 48]}]}
        ],
        "parameters": {"t": 0.3},
        "dtype": "float16",
    }
    config = tmp_path / "two-level.yaml"
    config.write_text(yaml.safe_dump_all([{"name": "sakura", **sakura}, second], sort_keys=False))
    assert runner.invoke(app, ["validate", str(config)]).exit_code == 0
    subprocess.run(
        [
            str(BIN / "mergekit-multi"),
            str(config),
            "-I",
            str(tmp_path / "mk-inter"),
            "--out-path",
            str(tmp_path / "mk"),
        ],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    result = runner.invoke(app, ["merge", str(config), "--out", str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output + result.stderr
    theirs, ours = tensors(tmp_path / "mk"), tensors(tmp_path / "ours")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
