"""GSM8K answer extraction: lm-eval's strict and flexible rules, on edge cases and on real generations."""

import pytest
from conftest import EVALDATA

from merger.evaluate.evaluator import evaluate
from merger.evaluate.model import load_model
from merger.evaluate.tasks.gsm8k import FLEXIBLE, GSM8K, INVALID, STRICT, exact_match, extract

GOLD = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.\n#### 18"


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("She makes 9 * 2 = 18.\n#### 18", "18", "18"),
        ("#### 1,234", "1,234", "1,234"),
        ("The answer is $18.", INVALID, "$18."),
        ("#### -5\nthen 7", "-5", "7"),
        ("no numbers here", INVALID, INVALID),
        ("It costs 3 dollars", INVALID, "3"),
        ("#### 18.00", "18.00", "18.00"),
    ],
)
def test_extraction(text, strict, flexible):
    assert extract(text, STRICT, 0) == strict
    assert extract(text, FLEXIBLE, -1) == flexible


@pytest.mark.parametrize(
    "prediction, hit",
    [("18", True), ("$18", True), ("18.", True), ("1,8", True), ("18.00", False), (INVALID, False), ("19", False)],
)
def test_exact_match_normalization(prediction, hit):
    assert exact_match(prediction, GOLD) == float(hit)


def test_scores_follow_extraction():
    task = GSM8K()
    doc = {"id": "x", "question": "q", "answer": GOLD}
    assert task.score_generation(doc, " 9 * 2 = 18\n#### 18") == {"exact_match": 1.0, "exact_match_flexible": 1.0}
    assert task.score_generation(doc, " so she makes $18 a day.") == {"exact_match": 0.0, "exact_match_flexible": 1.0}


@pytest.mark.slow
def test_real_generations_match_lm_eval(smollm2):
    """SmolLM2 answers GSM8K questions 1-shot; generations equal lm-eval's HFLM.generate_until, cut at stops."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = load_model(smollm2, "cpu")
    report = evaluate(model, tokenizer, ["gsm8k"], limit=3, num_fewshot=1, data=EVALDATA, show_progress=False)
    task = GSM8K()
    test, pool = task.load(EVALDATA)
    by_id = {d["id"]: d for d in test}
    # The same contexts with the same shots: a fresh task replays the same RNG draws in the same order.
    contexts = [task.context(by_id[i.id], task.shots(by_id[i.id], pool, 1)) for i in report.items]
    kwargs = {"until": list(task.until), "do_sample": False, "temperature": 0.0}
    requests = [Instance("generate_until", {}, (ctx, dict(kwargs)), i) for i, ctx in enumerate(contexts)]
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1).generate_until(requests, disable_tqdm=True)

    assert any(any(ch.isdigit() for ch in item.generation) for item in report.items)
    for item, reference in zip(report.items, theirs):
        assert item.generation == reference
        assert "Question:" not in item.generation
        gold = by_id[item.id]["answer"]
        assert item.exact_match == exact_match(extract(item.generation, STRICT, 0), gold)
        assert item.exact_match_flexible == exact_match(extract(item.generation, FLEXIBLE, -1), gold)
