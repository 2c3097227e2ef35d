"""Task names, presets, item subsets, the summary's lm-eval keys, and which scores may become Eval Results."""

import yaml

from merger.config.results import EvalSummary, Scores, TaskResult
from merger.evaluate.evaluator import sample_indices
from merger.evaluate.tasks import PRESETS, _declared, check_names, expand, name_index, task_manager
from merger.publish.eval_results import entries


def test_sample_is_seeded_nested_and_disjoint():
    a = sample_indices(1172, 30, 1234)
    assert a == sample_indices(1172, 30, 1234) == sorted(a) and a != sample_indices(1172, 30, 7)
    assert set(sample_indices(1172, 10, 1234)) <= set(a), "a growing limit only adds items (halving rungs)"
    assert not set(a) & set(sample_indices(1172, 30, 1234, offset=30)), "report items are disjoint"
    assert sample_indices(10, None, 1) == list(range(10))


def test_declared_names_in_every_yaml_form():
    text = "task: a_task\ntag:\n  - t1\n  - 't2'\ngroup: [g1, g2]\ndataset_path: x\n"
    assert _declared(text) == ["a_task", "t1", "t2", "g1", "g2"]


def test_names_resolve_to_few_folders():
    index = name_index()
    assert index["arc_challenge"] == ["arc"] and index["leaderboard_bbh"] == ["leaderboard"]
    assert "mmlu" in index and "leaderboard_musr_murder_mysteries" in index
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
