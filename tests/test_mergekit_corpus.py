"""Every config mergekit merges, merger merges the same; every config it cannot merge, merger refuses up front.

The 40 published configs of ../shared/mergekit-configs, with model ids mapped to tiny local models (corpus.py). The
reference is mergekit's own `run_merge` with the options `mergekit-yaml --random-seed 0 --lora-merge-cache DIR`
gives it; merger runs `merger validate` and `merger merge --random-seed 0 --lora-merge-cache DIR` on the same file.
A few configs run in the fast lane; the full suite runs all of them.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from corpus import configs, localize
from safetensors.torch import load_file
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()
FAST = {
    "02-mergekit-ties-gradients",
    "13-theprofessor-linear-slices",
    "17-umbral-mind-slerp-embed-slerp",
    "19-midnight-rose-dare-ties-typo",
    "32-huatuo-model-stock-loras",
}


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


def mergekit_merge(config: dict, out, lora_cache) -> str | None:
    """What `mergekit-yaml config out --random-seed 0 --lora-merge-cache lora_cache` does; None, or why it failed."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    logging.getLogger("mergekit").setLevel(logging.ERROR)
    try:
        run_merge(
            MergeConfiguration.model_validate(config),
            str(out),
            MergeOptions(random_seed=0, lora_merge_cache=str(lora_cache), quiet=True),
        )
    except Exception as exc:  # any failure means "mergekit cannot merge this config"
        return f"{type(exc).__name__}: {exc}"
    return None


def tensors(folder) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        found.update(load_file(path))
    return found


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow) for p in configs()]
)
def test_corpus_config(path, corpus_root, tmp_path):
    config = localize(path, corpus_root)
    recipe = tmp_path / path.name
    recipe.write_text(yaml.safe_dump(config, sort_keys=False))
    lora_cache = corpus_root / "lora-cache"
    failure = mergekit_merge(config, tmp_path / "mergekit", lora_cache)

    result = runner.invoke(app, ["validate", str(recipe)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if failure is not None:
        assert result.exit_code == 2 and errors, (failure, result.output, result.stderr)
        assert all(str(recipe) in line for line in errors)
        return
    assert result.exit_code == 0, (result.output, result.stderr)

    out = tmp_path / "merger"
    result = runner.invoke(
        app, ["merge", str(recipe), "--out", str(out), "--random-seed", "0", "--lora-merge-cache", str(lora_cache)]
    )
    assert result.exit_code == 0, (result.output, result.stderr)
    ours, theirs = tensors(out), tensors(tmp_path / "mergekit")
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different, different[:5]


@pytest.mark.slow
def test_the_reference_is_what_mergekit_yaml_writes(corpus_root, tmp_path):
    """The in-process reference above equals the real `mergekit-yaml --random-seed 0` on a randomized config."""
    import subprocess
    import sys
    from pathlib import Path

    [path] = [p for p in configs() if p.stem == "19-midnight-rose-dare-ties-typo"]
    config = localize(path, corpus_root)
    recipe = tmp_path / "config.yaml"
    recipe.write_text(yaml.safe_dump(config, sort_keys=False))
    cli = Path(sys.executable).parent / "mergekit-yaml"
    subprocess.run(
        [cli, recipe, tmp_path / "cli", "--random-seed", "0", "--lora-merge-cache", corpus_root / "lora-cache"],
        check=True,
        capture_output=True,
    )
    assert mergekit_merge(config, tmp_path / "inproc", corpus_root / "lora-cache") is None
    cli_tensors, inproc = tensors(tmp_path / "cli"), tensors(tmp_path / "inproc")
    assert cli_tensors.keys() == inproc.keys() and all(torch.equal(cli_tensors[k], inproc[k]) for k in inproc)
