"""`merger eval` on bad input: one clear line and exit 2."""

import shutil

import pytest
from conftest import EVALDATA
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(EVALDATA / "arc_challenge", root / "arc_challenge")
    return root


def run(*args):
    result = runner.invoke(app, ["eval", *map(str, args)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result, errors


def test_unknown_task(tiny_models):
    result, errors = run(tiny_models["a"], "--tasks", "arc_challenge,hellaswog")
    assert result.exit_code == 2 and len(errors) == 1 and "unknown task 'hellaswog'" in errors[0]


def test_missing_data_file(tiny_models, data):
    result, errors = run(tiny_models["a"], "--tasks", "hellaswag", "--data-dir", data)
    assert result.exit_code == 2 and "hellaswag/test.jsonl: no such data file" in errors[0]


def test_malformed_jsonl_line(tiny_models, data):
    path = data / "arc_challenge" / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:40]
    path.write_text("\n".join(lines) + "\n")
    result, errors = run(tiny_models["a"], "--tasks", "arc_challenge", "--data-dir", data, "--limit", "2")
    assert result.exit_code == 2 and "test.jsonl: line 3: not valid JSON" in errors[0]


def test_missing_field(tiny_models, data):
    path = data / "arc_challenge" / "test.jsonl"
    path.write_text('{"id": "x", "question": "q"}\n')
    result, errors = run(tiny_models["a"], "--tasks", "arc_challenge", "--data-dir", data)
    assert result.exit_code == 2 and "line 1: missing field(s): choices, answer" in errors[0]


def test_model_folder_without_weights(tmp_path, tiny_models):
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_models["a"], folder)
    (folder / "model.safetensors").unlink()
    result, errors = run(folder, "--tasks", "arithmetic")
    assert result.exit_code == 2 and "*.safetensors: no weights" in errors[0]


def test_pickled_only_model_is_refused(tiny_models):
    result, errors = run(tiny_models["pickled"], "--tasks", "arithmetic")
    assert result.exit_code == 2 and "only pickled weights" in errors[0]


def test_no_such_model_folder(tmp_path):
    result, errors = run(tmp_path / "nope", "--tasks", "arithmetic")
    assert result.exit_code == 2 and "no such model folder" in errors[0]


def test_fewshot_without_pool(tiny_models):
    result, errors = run(
        tiny_models["a"], "--tasks", "winogrande", "--num-fewshot", "5", "--data-dir", EVALDATA, "--limit", "2"
    )
    assert result.exit_code == 2 and "no few-shot pool" in errors[0]


def test_bad_fewshot_spec(tiny_models):
    result, errors = run(tiny_models["a"], "--num-fewshot", "arc=five")
    assert result.exit_code == 2 and "--num-fewshot" in errors[0]


def test_tiny_model_scores(tiny_models):
    result, errors = run(tiny_models["a"], "--tasks", "arithmetic", "--limit", "4", "--device", "cpu")
    assert result.exit_code == 0 and not errors, result.stderr
    assert "arithmetic" in result.stdout
