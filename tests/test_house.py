"""The house rules, checked: import contracts, lint and format, a thin CLI, one option set for DPO."""

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO
from typer.testing import CliRunner

from merger.cli import app
from merger.config.train import DPOSettings
from merger.core.hf import front_matter
from merger.flags import settings_options

BIN = Path(sys.executable).parent
runner = CliRunner()


def test_import_contracts_hold():
    """core <- config <- stages <- sweep <- cli, stages independent, no cycles (function-level imports too)."""
    result = subprocess.run([BIN / "lint-imports"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_ruff_lint_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([BIN / "ruff", *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_cli_is_thin():
    assert len((REPO / "merger" / "cli.py").read_text().splitlines()) <= 250


def test_dpo_flags_are_the_settings_fields():
    """`merger dpo`'s flags, defaults and help come from DPOSettings: one option set for the flag and the recipe."""
    params, build = settings_options(DPOSettings)
    assert [p.name for p in params] == list(DPOSettings.model_fields)
    defaults = build({"data": "x.jsonl"})
    assert defaults == DPOSettings(data="x.jsonl")
    built = build({"data": "x.jsonl", "against": "arc_challenge,gsm8k", "target_modules": "q_proj,v_proj"})
    assert built.against == ["arc_challenge", "gsm8k"] and built.target_modules == ["q_proj", "v_proj"]
    help_text = runner.invoke(app, ["dpo", "--help"], terminal_width=200).output
    for name, field in DPOSettings.model_fields.items():
        assert "--" + name.replace("_", "-") in help_text
        assert field.description.split()[0] in help_text


def test_spelled_out_dpo_defaults_do_not_change_the_candidate(tmp_path, tiny_models):
    from merger.config.recipe import expand

    merge = {
        "merge_method": "slerp",
        "base_model": str(tiny_models["a"]),
        "parameters": {"t": 0.5},
        "slices": [{"sources": [{"model": str(tiny_models[m]), "layer_range": [0, 4]} for m in "ab"]}],
    }
    ids = []
    for dpo in ({"data": "x.jsonl"}, {"data": "x.jsonl", "beta": 0.1, "loss_type": "sigmoid"}):
        path = tmp_path / f"r{len(ids)}.yaml"
        path.write_text(yaml.safe_dump({"merge": merge, "dpo": dpo}))
        ids.append(expand(path)[0].id)
    assert ids[0] == ids[1]


def test_mergekit_dtype_names_only(tmp_path, tiny_models):
    """`bf16` is merger's export flag, not a mergekit dtype: mergekit refuses it, so validation does too."""
    merge = {
        "merge_method": "slerp",
        "base_model": str(tiny_models["a"]),
        "parameters": {"t": 0.5},
        "dtype": "bf16",
        "slices": [{"sources": [{"model": str(tiny_models[m]), "layer_range": [0, 4]} for m in "ab"]}],
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(merge))
    result = runner.invoke(app, ["validate", str(path)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "merge.dtype: unknown dtype 'bf16'" in errors[0]


def test_card_of_a_folder_that_is_no_merge_keeps_what_its_card_states(tmp_path, tiny_models):
    import shutil

    folder = tmp_path / "plain"
    shutil.copytree(tiny_models["a"], folder)
    (folder / "README.md").write_text(
        "---\nlicense: mit\nbase_model: someone/base\ndatasets: [someone/data]\n---\n\n"
        "# Plain\n\nA fine-tune with a story of its own.\n"
    )
    result = runner.invoke(app, ["card", str(folder)])
    assert result.exit_code == 0, result.output + result.stderr
    meta, text = front_matter(folder / "README.md"), (folder / "README.md").read_text()
    assert meta["license"] == "mit" and meta["base_model"] == ["someone/base"] and meta["datasets"] == ["someone/data"]
    assert "merge" not in meta["tags"] and "mergekit" not in meta["tags"]
    assert "A merge of" not in text and "Merged from" not in text and "Reproduce" not in text
    assert "A fine-tune with a story of its own." in text
    result = runner.invoke(app, ["card", str(folder)])
    assert (folder / "README.md").read_text() == text, "a second run changes nothing"
