"""`merger eval` on bad input: one clear line and exit 2."""

import shutil

import pytest
from conftest import HUB
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(HUB / "allenai" / "ai2_arc", root / "allenai" / "ai2_arc")
    return root


def run(*args):
    result = runner.invoke(app, ["eval", *map(str, args)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result, errors


def test_unknown_task(tiny_models):
    result, errors = run(tiny_models["a"], "--tasks", "arc_challenge,hellaswog")
    assert result.exit_code == 2 and len(errors) == 1 and "unknown task 'hellaswog'" in errors[0]


def test_missing_configuration(tiny_models, data):
    result, errors = run(tiny_models["a"], "--tasks", "arc_easy", "--data-dir", data, "--limit", "2")
    assert result.exit_code == 2 and len(errors) == 1
    assert "ai2_arc/ARC-Easy: allenai/ai2_arc is mirrored but not its configuration 'ARC-Easy'" in errors[0]


def test_malformed_jsonl_line(tiny_models, data):
    path = data / "allenai" / "ai2_arc" / "ARC-Challenge" / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:40]
    path.write_text("\n".join(lines) + "\n")
    result, errors = run(tiny_models["a"], "--tasks", "arc_challenge", "--data-dir", data, "--limit", "2")
    assert result.exit_code == 2 and len(errors) == 1 and errors[0].startswith("error: arc_challenge:"), result.stderr


def test_unknown_include_path(tiny_models, tmp_path):
    result, errors = run(tiny_models["a"], "--tasks", "mytask", "--include-path", tmp_path / "nope")
    assert result.exit_code == 2 and "is not a folder of task YAMLs" in errors[0]


def test_model_folder_without_weights(tmp_path, tiny_models):
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_models["a"], folder)
    (folder / "model.safetensors").unlink()
    result, errors = run(folder, "--tasks", "merger_arithmetic")
    assert result.exit_code == 2 and "*.safetensors: no weights" in errors[0]


def test_pickled_only_model_is_refused(tiny_models):
    result, errors = run(tiny_models["pickled"], "--tasks", "merger_arithmetic")
    assert result.exit_code == 2 and "only pickled weights" in errors[0]


def test_no_such_model_folder(tmp_path):
    result, errors = run(tmp_path / "nope", "--tasks", "merger_arithmetic")
    assert result.exit_code == 2 and "no such model folder" in errors[0]


def test_fewshot_without_pool(tiny_models):
    result, errors = run(
        tiny_models["a"], "--tasks", "winogrande", "--num-fewshot", "5", "--data-dir", HUB, "--limit", "2"
    )
    assert result.exit_code == 2 and len(errors) == 1
    assert "winogrande_xl/train.jsonl: winogrande (5-shot) reads split 'train'" in errors[0]


def test_bad_fewshot_spec(tiny_models):
    result, errors = run(tiny_models["a"], "--num-fewshot", "arc=five")
    assert result.exit_code == 2 and "--num-fewshot" in errors[0]


def test_tiny_model_scores(tiny_models):
    result, errors = run(tiny_models["a"], "--tasks", "merger_arithmetic", "--limit", "4", "--device", "cpu")
    assert result.exit_code == 0 and not errors, result.stderr
    assert "merger_arithmetic" in result.stdout
