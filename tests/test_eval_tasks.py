"""Task names, presets, item subsets, the summary's lm-eval keys, and which scores may become Eval Results."""

import pytest
import yaml

from merger.config.results import EvalSummary, Scores, TaskResult
from merger.evaluate.evaluator import sample_indices
from merger.evaluate.tasks import PRESETS, check_names, expand, name_index, task_manager
from merger.publish.eval_results import entries


def test_sample_is_seeded_nested_and_disjoint():
    a = sample_indices(1172, 30, 1234)
    assert a == sample_indices(1172, 30, 1234) and a != sample_indices(1172, 30, 7)
    assert a != sorted(a), "in the seeded order: an item's place in it is its position"
    assert sample_indices(1172, 10, 1234) == a[:10], "a growing limit only adds items, at the end (racing slices)"
    assert sample_indices(1172, 20, 1234, offset=10) == a[10:], "a slice is the order's next positions"
    assert not set(a) & set(sample_indices(1172, 30, 1234, offset=30)), "report items are disjoint"
    assert sorted(sample_indices(10, None, 1)) == list(range(10))


def test_names_resolve_to_few_folders():
    index = name_index()
    assert index["arc_challenge"] == ["arc"] and index["leaderboard_bbh"] == ["leaderboard"]
    assert "mmlu" in index and "leaderboard_musr_murder_mysteries" in index
    for quoted in ("mmlu_anatomy", "bbh_zeroshot_boolean_expressions", "cmmlu_agronomy"):  # `"task": "..."` YAMLs
        assert index[quoted] == [quoted.split("_")[0]]
    assert index["ai2_arc"] == ["arc"], "a tag: its tasks' folders"
    manager = task_manager(["openllm-v1"], [])
    assert {"arc_challenge", "gsm8k", "mmlu", "merger_arithmetic"} <= set(manager.all_tasks)
    assert len(manager.all_tasks) < 2000, "only the folders needed are indexed"


def test_presets_expand_in_order():
    assert expand(["openllm-v1"]) == ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
    assert [p.num_fewshot for p in PRESETS["openllm-v1"]] == [25, 10, 5, 0, 5, 5]
    assert expand(["openllm-v2", "leaderboard_bbh"])[:2] == ["leaderboard_ifeval", "leaderboard_bbh"]
    assert check_names(["openllm-v2", "arc_challenge", "ai2_arc"], []) == ["openllm-v2", "arc_challenge", "ai2_arc"]


def test_summary_uses_lm_eval_keys_and_round_trips():
    flat = {
        "acc,none": 0.5,
        "acc_stderr,none": 0.1,
        "exact_match,strict-match": 0.25,
        "n": 4,
        "n_total": 4,
        "num_fewshot": 5,
        "seconds": 1.0,
        "primary": "acc,none",
        "protocol": "openllm-v1",
        "lm_eval": "0.4.13",
    }
    summary = EvalSummary.model_validate({"tasks": {"x": flat}})
    score = summary.tasks["x"]
    assert score.metrics == {"acc,none": 0.5, "exact_match,strict-match": 0.25} and score.stderr == {"acc,none": 0.1}
    assert EvalSummary.model_validate_json(summary.model_dump_json()) == summary
    assert summary.model_dump()["tasks"]["x"]["acc_stderr,none"] == 0.1


def result(n, n_total, protocol="openllm-v2"):
    return TaskResult(
        metric="acc,none", value=0.4321, n=n, n_total=n_total, num_fewshot=5, dataset="TIGER-Lab/MMLU-Pro",
        protocol=protocol, data="hub",
    )  # fmt: skip


def test_eval_results_only_for_whole_benchmarks():
    scores = Scores(
        items="report",
        tasks={
            "leaderboard_mmlu_pro": result(280, 280),
            "quick": result(20, 280),
            "custom": result(10, 10, protocol=None),
        },
    )
    files, skipped = entries(scores, date="2026-11-24")
    assert list(files) == ["leaderboard_mmlu_pro.yaml"]
    [entry] = yaml.safe_load(
        yaml.safe_dump([e.model_dump(exclude_none=True) for e in files["leaderboard_mmlu_pro.yaml"]])
    )
    assert entry["dataset"] == {"id": "TIGER-Lab/MMLU-Pro", "task_id": "leaderboard_mmlu_pro"}
    assert entry["value"] == 43.21 and entry["date"] == "2026-11-24"
    assert any("quick subset (20 of 280" in s for s in skipped) and any("custom: not scored" in s for s in skipped)
    selected = Scores(items="select", tasks={"leaderboard_mmlu_pro": result(280, 280)})
    assert entries(selected)[0] == {}, "never the items a sweep selected on"


def test_signal_follows_the_metric_as_lm_eval_orders_choices(tiny_models):
    """For acc (ARC, Winogrande's several contexts) and acc_norm (ARC, HellaSwag), the gold choice's probability
    is largest exactly when lm-eval's metric says the item is right; the recorded signal is the one for the task's
    headline metric, and every item records its gold choices and its seeded position."""
    from conftest import HUB

    from merger.config.recipe import EvalSettings
    from merger.evaluate.evaluator import evaluate, load_tasks, make_lm
    from merger.evaluate.mirror import data_dir, mirrored
    from merger.evaluate.signals import normalized, p_gold, probabilities

    settings = EvalSettings(
        tasks=["arc_challenge", "winogrande", "hellaswag"], limit=12, num_fewshot=0, data_dir=str(HUB)
    )
    report = evaluate(make_lm(settings, folder=tiny_models["a"], device="cpu"), settings, show_progress=False)
    with mirrored(data_dir(settings.data_dir)):
        tasks = load_tasks(settings.tasks, settings)
    checked = 0
    for item in report.items:
        task = tasks[item.task][item.task]
        choices = task.doc_to_choice(task.eval_docs[item.doc_id])
        assert item.gold and item.primary in item.metrics
        for metric in (m for m in item.metrics if m.split(",")[0] in ("acc", "acc_norm")):
            p = probabilities(normalized(item.lls, choices, metric))
            assert item.metrics[metric] == float(max(range(len(p)), key=p.__getitem__) in item.gold), (item, metric)
            checked += 1
        assert item.signal == p_gold(item.lls, choices, item.gold, item.primary)
    assert checked == 12 * 2 + 12 + 12 * 2
    assert {item.primary for item in report.items} == {"acc_norm,none", "acc,none"}
    assert sorted(item.position for item in report.items if item.task == "winogrande") == list(range(12))


def test_a_quoted_key_user_task_is_found_and_scored(tiny_models, tmp_path):
    """Task YAMLs that quote their keys (as lm-eval's generated MMLU and BBH files do) are indexed as lm-eval indexes
    them, in a user's include path too."""
    import shutil

    from typer.testing import CliRunner

    from merger.cli import app
    from merger.evaluate.tasks import OWN_TASKS

    shutil.copy(OWN_TASKS / "arithmetic.py", tmp_path / "arithmetic.py")
    text = (OWN_TASKS / "merger_arithmetic.yaml").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    quoted = [f'"{k}":{v}' if not k.startswith(" ") else f"{k}:{v}" for k, _, v in (x.partition(":") for x in lines)]
    (tmp_path / "quoted.yaml").write_text("\n".join(quoted).replace("merger_arithmetic", "quoted_arithmetic") + "\n")
    assert '"task": quoted_arithmetic' in (tmp_path / "quoted.yaml").read_text()
    result = CliRunner().invoke(
        app, ["eval", str(tiny_models["a"]), "--tasks", "quoted_arithmetic", "--include-path", str(tmp_path),
              "--limit", "4", "--device", "cpu", "--json", str(tmp_path / "scores.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    assert EvalSummary.model_validate_json((tmp_path / "scores.json").read_text()).tasks["quoted_arithmetic"].n == 4


@pytest.mark.slow
def test_every_name_lm_eval_lists_is_known():
    """merger's map holds exactly the task, group and tag names a full TaskManager lists, and each is accepted."""
    from lm_eval.tasks import TaskManager

    listed = set(TaskManager().all_tasks)
    assert set(name_index()) == listed
    assert check_names(sorted(listed), []) == sorted(listed)


@pytest.mark.slow
def test_a_subtask_without_a_mirror_is_one_data_line(tiny_models, tmp_path):
    from typer.testing import CliRunner

    from merger.cli import app

    result = CliRunner().invoke(
        app, ["eval", str(tiny_models["a"]), "--tasks", "cmmlu_agronomy", "--data-dir", str(tmp_path), "--limit", "2"]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "unknown task" not in errors[0], result.stderr
    assert f"{tmp_path}/haonan-li/cmmlu/agronomy: haonan-li/cmmlu is not in the data dir" in errors[0], errors
