"""merger's scorer against lm-eval on the same items of real benchmark data, with the real SmolLM2.

lm-eval runs its built-in task configs (local YAMLs that `include` them and only point at local data);
per-item log-likelihoods must agree within 1e-3 and per-item decisions must be identical, except where
two choices are within 1e-3 of each other.
"""

import json
from pathlib import Path

import pytest
from conftest import EVALDATA
from lmeval_reference import run_reference  # noqa: E402

from merger.evaluate.data import sample_indices
from merger.evaluate.evaluator import evaluate
from merger.evaluate.model import load_model
from merger.evaluate.tasks import get_task

TOL = 1e-3
N = 16  # per case; each task runs 0-shot and few-shot, so a few dozen items per task


@pytest.fixture(scope="module")
def live(smollm2):
    return load_model(smollm2, "cpu")


@pytest.fixture(scope="module")
def winogrande_with_pool(tmp_path_factory) -> Path:
    """Winogrande ships no few-shot split here; items far from the scored ones stand in, to test the sampler."""
    root = tmp_path_factory.mktemp("wg")
    lines = (EVALDATA / "winogrande" / "test.jsonl").read_text().splitlines()
    (root / "winogrande").mkdir()
    (root / "winogrande" / "test.jsonl").write_text("\n".join(lines[:600]) + "\n")
    (root / "winogrande" / "fewshot.jsonl").write_text("\n".join(lines[1000:1100]) + "\n")
    return root


def near_tie(lls, lengths=None) -> bool:
    values = sorted((ll / n for ll, n in zip(lls, lengths)) if lengths else lls, reverse=True)
    return len(values) > 1 and values[0] - values[1] < TOL


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, shots, data, batch_size",
    [
        ("arc_challenge", 0, None, None),
        ("arc_challenge", 3, None, None),
        ("arc_challenge", 3, None, 4),  # padded batches of several items: masks and positions must not leak
        ("hellaswag", 0, None, None),
        ("hellaswag", 3, None, None),
        ("hellaswag", 3, None, 4),
        ("mmlu", 0, None, None),
        ("mmlu", 5, None, None),
        ("truthfulqa_mc2", 0, None, 4),
        ("winogrande", 0, None, None),
        ("winogrande", 3, "pool", 4),
    ],
)
def test_items_agree_with_lm_eval(live, tmp_path, winogrande_with_pool, task, shots, data, batch_size):
    model, tokenizer = live
    root = winogrande_with_pool if data == "pool" else EVALDATA
    ours = evaluate(
        model, tokenizer, [task], limit=N, num_fewshot=shots, data=root, show_progress=False, batch_size=batch_size
    )
    assert ours.tasks[task].n == N and ours.tasks[task].num_fewshot == shots

    t = get_task(task)
    test, pool = t.load(root)
    docs = [test[i] for i in sample_indices(len(test), N, 1234)]
    reference, _ = run_reference(model, tokenizer, task, docs, pool, shots, tmp_path)
    assert len(reference) == N

    for item, doc in zip(ours.items, docs):
        ref = reference[item.id]
        assert len(item.lls) == len(ref["lls"])
        assert max(abs(a - b) for a, b in zip(item.lls, ref["lls"])) < TOL, item.id
        if task == "truthfulqa_mc2":
            assert item.mc2 == pytest.approx(ref["acc"], abs=TOL)
            continue
        if not near_tie(item.lls):
            assert item.acc == ref["acc"], item.id
        if item.acc_norm is not None and not near_tie(item.lls, [len(c) for c in t.doc_to_choice(doc)]):
            assert item.acc_norm == ref["acc_norm"], item.id


def test_limit_sample_is_seeded_and_in_file_order():
    a = sample_indices(1172, 30, 1234)
    assert a == sample_indices(1172, 30, 1234) == sorted(a)
    assert a != sample_indices(1172, 30, 7)
    assert sample_indices(10, None, 1) == list(range(10))


def test_cli_writes_summary_and_items(smollm2, tmp_path):
    from typer.testing import CliRunner

    from merger.cli import app

    summary, items = tmp_path / "s.json", tmp_path / "i.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(smollm2),
            "--tasks",
            "arithmetic,winogrande",
            "--limit",
            "8",
            "--data-dir",
            str(EVALDATA),
            "--json",
            str(summary),
            "--items",
            str(items),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output + result.stderr
    tasks = json.loads(summary.read_text())["tasks"]
    assert set(tasks) == {"arithmetic", "winogrande"}
    for entry in tasks.values():
        assert {"acc", "acc_stderr", "n", "num_fewshot", "seconds"} <= set(entry) and entry["n"] == 8
    assert tasks["arithmetic"]["num_fewshot"] == 5 and tasks["winogrande"]["num_fewshot"] == 0
    records = [json.loads(line) for line in items.read_text().splitlines()]
    assert len(records) == 16
    assert {"task", "id", "lls", "acc"} <= set(records[0])
    # SmolLM2 does two-digit arithmetic far above chance (0.25) on the generated task.
    assert tasks["arithmetic"]["acc"] >= 0.5
