"""The DPO stage: data checks, decontamination, LoRA and full training, atomic merged output."""

import json
from pathlib import Path

import pytest
import torch
from conftest import EVALDATA, HUB
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from merger.cli import app
from merger.dpo.decontaminate import check, ngrams
from merger.dpo.pairs import normalize
from merger.evaluate.documents import reference_texts

runner = CliRunner()


def write_pairs(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


STRING_ROWS = [
    {"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.", "rejected": f"It is {a * b + 7}."}
    for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (3, 3), (5, 2)]
]
CHAT_ROWS = [
    {
        "system": "You are terse.",
        "prompt": [{"role": "user", "content": f"Name the capital number {i}."}],
        "chosen": [{"role": "user", "content": "ignored"}, {"role": "assistant", "content": "Paris is the capital."}],
        "rejected": [{"role": "assistant", "content": "Quick brown fox."}],
    }
    for i in range(6)
]


def dpo(*args):
    result = runner.invoke(app, ["dpo", *map(str, args)])
    return result, [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_normalize_strings_chat_and_system():
    pairs, report = normalize(STRING_ROWS[:1] + CHAT_ROWS[:1], "x")
    assert report.read == 2 and not report.dropped
    assert pairs[0].prompt == [{"role": "user", "content": "What is 2 plus 3?"}]
    assert pairs[0].chosen == [{"role": "assistant", "content": "2 plus 3 is 5."}]
    assert pairs[1].prompt[0] == {"role": "system", "content": "You are terse."}
    assert pairs[1].chosen == [{"role": "assistant", "content": "Paris is the capital."}]


def test_system_prompt_reaches_the_chat_template(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["a"])
    [pair], _ = normalize(CHAT_ROWS[:1], "x")
    text = tokenizer.apply_chat_template(pair.prompt + pair.chosen, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, "empty prompt"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "empty chosen or rejected"),
        ({"prompt": "q", "chosen": "same answer", "rejected": " same answer "}, "chosen identical to rejected"),
    ],
)
def test_validation_rules_drop_and_count(row, reason):
    pairs, report = normalize([row, STRING_ROWS[0]], "x")
    assert len(pairs) == 1 and report.dropped == {reason: 1}


def test_decontamination_finds_planted_items():
    arc = [json.loads(line) for line in (EVALDATA / "arc_challenge" / "test.jsonl").read_text().splitlines()[:50]]
    planted = f"Please answer: {arc[7]['question']} Thanks."
    clean = "A completely unrelated sentence about cooking pasta with garlic, olive oil and a little chili."
    report, examples, flags = check([clean, planted, clean], reference_texts(["arc_challenge"], HUB))
    assert flags == [False, True, False]
    assert report.checked == 3 and report.matched == 1 and report.by_task == {"arc_challenge": 1}
    assert examples[0]["item"] == "arc_challenge/7"
    assert len(ngrams("one two three")) == 0 and len(ngrams(" ".join(map(str, range(14))))) == 2


@pytest.mark.slow
def test_decontaminate_flag_drops_matches(tiny_models, tmp_path):
    arc = json.loads((EVALDATA / "arc_challenge" / "test.jsonl").read_text().splitlines()[3])
    rows = STRING_ROWS + [{"prompt": arc["question"], "chosen": "yes it is", "rejected": "no"}]
    data = write_pairs(tmp_path / "p.jsonl", rows)
    result, errors = dpo(
        tiny_models["a"],
        "--data",
        data,
        "--out",
        tmp_path / "out",
        "--max-steps",
        "1",
        "--decontaminate",
        "--against",
        "arc_challenge",
        "--data-dir",
        HUB,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads((tmp_path / "out" / "merger_dpo.json").read_text())
    assert summary["decontamination"]["checked"] == 7
    assert summary["decontamination"]["matched"] == 1 and summary["decontamination"]["dropped"] == 1
    assert summary["data"]["pairs_used"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("full, rows", [(False, STRING_ROWS), (True, STRING_ROWS), (False, CHAT_ROWS)])
def test_tiny_training_full_and_lora(tiny_models, tmp_path, full, rows):
    data = write_pairs(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    args = [
        tiny_models["a"],
        "--data",
        data,
        "--out",
        out,
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--lr",
        "1e-3",
    ] + (["--full"] if full else [])
    result, errors = dpo(*args)
    assert result.exit_code == 0, result.output + result.stderr
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "dpo_metrics.jsonl", "merger_dpo.json"} <= names
    assert not any("adapter" in n for n in names), "LoRA must be merged into plain weights"
    metrics = [json.loads(line) for line in (out / "dpo_metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss", "rewards/accuracies", "rewards/margins"} <= set(metrics[0])
    before = AutoModelForCausalLM.from_pretrained(tiny_models["a"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"
    assert not list(tmp_path.glob(".out.dpo-work-*")), "the work folder is removed once the output is complete"


@pytest.mark.slow
def test_overlong_pairs_dropped_or_truncated(tiny_models, tmp_path):
    rows = STRING_ROWS + [{"prompt": "long " * 400, "chosen": "a", "rejected": "b"}]
    data = write_pairs(tmp_path / "p.jsonl", rows)
    for mode, used, dropped, truncated in [("drop", 6, 1, 0), ("truncate", 7, 0, 1)]:
        out = tmp_path / mode
        result, _ = dpo(
            tiny_models["a"],
            "--data",
            data,
            "--out",
            out,
            "--max-steps",
            "1",
            "--max-length",
            "128",
            "--overlong",
            mode,
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output + result.stderr
        facts = json.loads((out / "merger_dpo.json").read_text())["data"]
        assert facts["pairs_used"] == used and facts["truncated"] == truncated
        assert sum(facts["dropped"].values()) == dropped


def test_bad_inputs(tiny_models, tmp_path):
    good = write_pairs(tmp_path / "good.jsonl", STRING_ROWS)
    cases = [
        (
            [tiny_models["a"], "--data", write_pairs(tmp_path / "cols.jsonl", [{"prompt": "q", "chosen": "a"}])],
            "missing rejected",
        ),
        ([tiny_models["a"], "--data", write_pairs(tmp_path / "empty.jsonl", [])], "holds no preference pairs"),
        ([tiny_models["a"], "--data", good, "--loss-type", "sigmoidal"], "unknown loss_type 'sigmoidal'"),
        ([tiny_models["a"], "--data", tmp_path / "missing.jsonl"], "no such preference file"),
        ([tiny_models["a"], "--data", good, "--against", "arc"], "unknown task 'arc'"),
        (
            [tiny_models["a"], "--data", good, "--qlora", "--device", "cpu"],
            "needs bitsandbytes: pip install 'merger[qlora]'",
        ),
    ]
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in tiny_models["a"].iterdir():
        if not f.name.startswith("tokenizer"):
            (notok / f.name).write_bytes(f.read_bytes())
    cases.append(([notok, "--data", good], "the model folder has no tokenizer"))
    for args, words in cases:
        out = tmp_path / "out"
        result, errors = dpo(*args, "--out", out, "--max-steps", "1")
        assert result.exit_code == 2, (words, result.output, result.stderr)
        assert len(errors) == 1 and words in errors[0], (words, errors)
        assert not out.exists()


def test_smollm2_lora_dpo_learns_and_talks(smollm2, tmp_path):
    """A few dozen real preference pairs, LoRA, a few epochs: loss falls, reward accuracy rises, output talks."""
    lines = (EVALDATA / "preferences" / "hh_rlhf_harmless_base_test.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[:60]]
    rows = [r for r in rows if len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) < 400][:6]
    data = write_pairs(tmp_path / "p.jsonl", rows)
    out = tmp_path / "dpo"
    # One batch holds every pair, so each step is an epoch and steps compare on the same pairs.
    result, errors = dpo(
        smollm2,
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "4",
        "--batch-size",
        "6",
        "--lr",
        "1e-4",
        "--max-length",
        "256",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output + result.stderr
    metrics = [json.loads(line) for line in (out / "dpo_metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4
    first, last = metrics[0], metrics[-1]
    assert last["loss"] < first["loss"] - 0.05
    assert last["rewards/accuracies"] > first["rewards/accuracies"]
    assert last["rewards/margins"] > 0

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    reply = tokenizer.decode(
        model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :], skip_special_tokens=True
    )
    assert "Paris" in reply


def test_a_model_that_cannot_fit_the_gpu_is_one_line_with_the_way_out(tiny_models, monkeypatch):
    """Before any loading: LoRA needs the weights once in the compute dtype, full fine-tuning about four times;
    when that exceeds the free GPU memory, one line says how much and suggests QLoRA."""
    import torch

    from merger.config.dpo import DPOSettings
    from merger.core.errors import UserError
    from merger.dpo.train import check_fits

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_models["a"]).parameters())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (3 * params, 80 * 2**30))  # room for 1.5x in bf16
    settings = DPOSettings(data="pairs.jsonl")
    check_fits(tiny_models["a"], settings, torch.bfloat16)
    with pytest.raises(UserError, match=r"full fine-tuning needs about .* GiB for the weights alone.*use --qlora"):
        check_fits(tiny_models["a"], settings.model_copy(update={"full": True}), torch.bfloat16)
