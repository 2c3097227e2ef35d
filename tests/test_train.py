"""The DPO stage: data checks, decontamination, LoRA and full training, atomic merged output."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import EVALDATA, HUB
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from merger.cli import app
from merger.core.hf import front_matter
from merger.evaluate.documents import reference_texts
from merger.train.decontaminate import check, ngrams
from merger.train.pairs import normalize

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
    summary = json.loads((tmp_path / "out" / "merger_train.json").read_text())[-1]
    assert summary["decontamination"]["checked"] == 7
    assert summary["decontamination"]["matched"] == 1 and summary["decontamination"]["dropped"] == 1
    assert summary["data"]["rows_used"] == 6


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
    assert {"model.safetensors", "config.json", "tokenizer.json", "train_metrics.jsonl", "merger_train.json"} <= names
    assert not any("adapter" in n for n in names), "LoRA must be merged into plain weights"
    metrics = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss", "rewards/accuracies", "rewards/margins"} <= set(metrics[0])
    before = AutoModelForCausalLM.from_pretrained(tiny_models["a"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"
    assert not list(tmp_path.glob(".out.train-work-*")), "the work folder is removed once the output is complete"


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
        facts = json.loads((out / "merger_train.json").read_text())[-1]["data"]
        assert facts["rows_used"] == used and facts["truncated"] == truncated
        assert sum(facts["dropped"].values()) == dropped


def test_bad_inputs(tiny_models, tmp_path):
    good = write_pairs(tmp_path / "good.jsonl", STRING_ROWS)
    cases = [
        (
            [tiny_models["a"], "--data", write_pairs(tmp_path / "cols.jsonl", [{"prompt": "q", "chosen": "a"}])],
            "preference pairs needs prompt, chosen, rejected",
        ),
        ([tiny_models["a"], "--data", write_pairs(tmp_path / "empty.jsonl", [])], "holds no preference pairs"),
        ([tiny_models["a"], "--data", good, "--loss-type", "sigmoidal"], "unknown loss_type 'sigmoidal'"),
        ([tiny_models["a"], "--data", tmp_path / "missing.jsonl"], "no such preference pairs file"),
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
    metrics = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
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

    from merger.config.train import DPOSettings
    from merger.core.errors import UserError
    from merger.train.model import check_fits

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_models["a"]).parameters())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (3 * params, 80 * 2**30))  # room for 1.5x in bf16
    settings = DPOSettings(data="pairs.jsonl")
    check_fits(tiny_models["a"], settings, torch.bfloat16)
    with pytest.raises(UserError, match=r"full fine-tuning needs about .* GiB for the weights alone.*use --qlora"):
        check_fits(tiny_models["a"], settings.model_copy(update={"full": True}), torch.bfloat16)


# --- the training stage: settings, layers, continued pretraining, SFT, distillation -------------------------------
TEXTS = [
    {"text": " ".join(["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."] * 6)}
] * 12


def test_loss_types_are_trls():
    """LOSS_TYPES is trl's own list, as its DPOConfig documents it."""
    import dataclasses
    import re

    from trl import DPOConfig

    from merger.config.train import LOSS_TYPES

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    assert tuple(re.findall(r"`'(\w+)'`", help_text)) == LOSS_TYPES


def test_train_flags_are_the_settings_fields():
    """`merger train` has one flag per SFTSettings field, inherited ones (LoRA, training) included."""
    from merger.config.train import SFTSettings

    help_text = runner.invoke(app, ["train", "--help"], terminal_width=240).output
    for name in SFTSettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name
    assert "--beta" not in help_text


def test_inserted_layers_of_plain_and_preserving_upscales():
    from merger.config.recipe import DepthUpscale
    from merger.config.train import inserted_layers, upscaled_from

    for preserve in (False, True):
        merge = DepthUpscale(model="m", overlap=8, preserve=preserve).to_mergekit(30)
        assert inserted_layers(merge) == list(range(22, 36)), preserve
        assert upscaled_from(merge) == "m"
    slerp = {"merge_method": "slerp", "base_model": "a", "models": [{"model": "a"}, {"model": "b"}]}
    assert inserted_layers(slerp) == [] and upscaled_from(slerp) is None


def test_sft_rows_from_chat_prompt_completion_and_preference_data():
    from merger.train.sft import _row

    assert _row({"text": "plain"}, "pretrain") == {"text": "plain"}
    assert _row({"text": "  "}, "pretrain") is None
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert _row({"messages": chat}, "sft") == {"messages": chat}
    pair = {"system": "Be brief.", "prompt": "2+2?", "chosen": "4", "rejected": "5"}
    assert _row(pair, "sft") == {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    }


def test_train_steps_in_recipes_validate_before_any_work(tiny_models, tmp_path):
    from merger.config.recipe import expand
    from merger.core.errors import UserError

    a = str(tiny_models["a"])
    texts = write_pairs(tmp_path / "texts.jsonl", TEXTS)
    slerp = {
        "merge_method": "slerp",
        "base_model": a,
        "slices": [
            {"sources": [{"model": a, "layer_range": [0, 4]}, {"model": str(tiny_models["b"]), "layer_range": [0, 4]}]}
        ],
        "parameters": {"t": 0.5},
    }
    cases = [
        (
            {"merge": slerp, "train": [{"pretrain": {"data": str(texts)}, "sft": {"data": str(texts)}}]},
            "train.0: a train step is exactly one of pretrain, sft, dpo",
        ),
        (
            {"merge": slerp, "dpo": {"data": "p.jsonl"}, "train": [{"sft": {"data": str(texts)}}]},
            "dpo: give DPO as the last step of `train:`",
        ),
        (
            {"merge": slerp, "train": [{"pretrain": {"data": str(texts), "layers": "inserted"}}]},
            "train.0.pretrain.layers: 'inserted' needs a depth up-scale",
        ),
        (
            {"merge": slerp, "train": [{"pretrain": {"data": str(texts), "distill": True}}]},
            "train.0.pretrain.teacher: distill needs a teacher",
        ),
        (
            {"merge": slerp, "train": [{"pretrain": {"data": str(texts), "layers": "3-1"}}]},
            "is not 'inserted' or layer indices",
        ),
    ]
    for number, (recipe, words) in enumerate(cases):
        path = tmp_path / f"r{number}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        with pytest.raises(UserError) as caught:
            expand(path)
        assert any(words in str(p) for p in caught.value.problems), (words, caught.value.problems)
    # the missing data file is one line from `merger validate`, before any merge
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump({"merge": slerp, "train": [{"sft": {"data": str(tmp_path / "none.jsonl")}}]}))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "train.0.sft.data: no such file" in result.stderr
    # `dpo:` is `train: [{dpo: ...}]`, the same candidate
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(yaml.safe_dump({"merge": slerp, "dpo": {"data": "p.jsonl", "beta": 0.2}}))
    two.write_text(yaml.safe_dump({"merge": slerp, "train": [{"dpo": {"data": "p.jsonl", "beta": 0.2}}]}))
    assert expand(one)[0].id == expand(two)[0].id


def upscaled_tiny(tiny_models, tmp_path, preserve=False) -> Path:
    """A tiny Llama of 4 layers up-scaled with overlap 1: 3 + 3 = 6 layers, layers 3 and 4 inserted."""
    recipe = tmp_path / f"dus-{preserve}.yaml"
    recipe.write_text(
        yaml.safe_dump({"depth_upscale": {"model": str(tiny_models["a"]), "overlap": 1, "preserve": preserve}})
    )
    out = tmp_path / f"dus-{preserve}"
    result = runner.invoke(app, ["merge", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    return out


def train_cli(*args):
    result = runner.invoke(app, ["train", *map(str, args), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads((Path(args[args.index("--out") + 1]) / "merger_train.json").read_text())[-1]


@pytest.mark.slow
@pytest.mark.parametrize("full", [True, False])
def test_only_the_inserted_layers_are_trained(tiny_models, tmp_path, full):
    """`layers: inserted` trains exactly the inserted layers' parameters: counted before training, and the only
    weights that differ afterwards."""
    from safetensors.torch import load_file

    source = upscaled_tiny(tiny_models, tmp_path)
    texts = write_pairs(tmp_path / "texts.jsonl", TEXTS)
    out = tmp_path / "out"
    run = train_cli(
        source,
        "--data",
        texts,
        "--out",
        out,
        "--max-steps",
        "2",
        "--max-length",
        "64",
        "--lr",
        "1e-2",
        "--layers",
        "inserted",
        *(["--full"] if full else []),
    )
    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert run["layers"] == [3, 4]
    inside = lambda name: any(f".layers.{i}." in name for i in (3, 4))  # noqa: E731
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(inside(name) for name in changed), changed
    model = AutoModelForCausalLM.from_pretrained(source)
    if full:
        expected = sum(p.numel() for name, p in model.named_parameters() if inside(name))
        assert changed == {name for name in before if inside(name)}
    else:  # LoRA: r * (in + out) for every linear module of the two layers
        expected = sum(
            16 * (m.in_features + m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and inside(name + ".")
        )
    assert run["trainable"] == expected


@pytest.mark.slow
def test_pretrain_sft_and_distillation(tiny_models, tmp_path):
    """Continued pretraining lowers held-out perplexity (recorded before and after); distillation defaults its
    teacher to the up-scaled model and logs both terms; SFT takes the chosen side of preference pairs; each output
    carries every step it went through."""
    source = upscaled_tiny(tiny_models, tmp_path)
    texts = write_pairs(tmp_path / "texts.jsonl", TEXTS)
    common = ["--max-length", "64", "--lr", "5e-3", "--heldout", texts, "--heldout-texts", "4"]
    healed = train_cli(source, "--data", texts, "--out", tmp_path / "cpt", "--max-steps", "6", *common)
    assert healed["kind"] == "pretrain" and healed["perplexity"]["after"] < healed["perplexity"]["before"]
    distilled = train_cli(source, "--data", texts, "--out", tmp_path / "kd", "--max-steps", "2", "--distill", *common)
    assert distilled["teacher"] == str(tiny_models["a"])
    metrics = [json.loads(line) for line in (tmp_path / "kd" / "train_metrics.jsonl").read_text().splitlines()]
    assert all({"ce", "kl"} <= set(m) for m in metrics)
    pairs = write_pairs(tmp_path / "p.jsonl", STRING_ROWS)
    sft = train_cli(tmp_path / "cpt", "--data", pairs, "--out", tmp_path / "sft", "--max-steps", "2")
    assert sft["kind"] == "sft" and sft["data"]["rows_used"] == len(STRING_ROWS)
    history = json.loads((tmp_path / "sft" / "merger_train.json").read_text())
    assert [h["kind"] for h in history] == ["pretrain", "sft"]
    assert {"pretrain", "sft", "trl"} <= set(front_matter(tmp_path / "sft" / "README.md")["tags"])
    result = runner.invoke(app, ["card", str(tmp_path / "sft")])
    assert result.exit_code == 0, result.output + result.stderr
    card = (tmp_path / "sft" / "README.md").read_text()
    assert "then trained with trl (continued pretraining -> SFT)" in card
    assert "1. **continued pretraining** of" in card and "2. **SFT** of" in card
    assert "Held-out perplexity" in card and "merger train step-1 --data" in card


@pytest.mark.slow
def test_a_sweep_runs_a_training_chain_with_stepwise_dpo(tiny_models, tmp_path):
    """up-scale -> pretrain -> DPO -> DPO in one recipe: each step trains the step before's output (so the second DPO
    step's reference is the first's output: stepwise DPO), the journal has every step once, and a rerun redoes
    nothing."""
    import sqlite3

    texts = write_pairs(tmp_path / "texts.jsonl", TEXTS)
    pairs = write_pairs(tmp_path / "p.jsonl", STRING_ROWS)
    short = {"max_steps": 1, "max_length": 64, "batch_size": 2}
    recipe = {
        "depth_upscale": {"model": str(tiny_models["a"]), "overlap": 1},
        "train": [
            {"pretrain": {"data": str(texts), **short}},
            {"dpo": {"data": str(pairs), **short}},
            {"dpo": {"data": str(pairs), **short, "beta": 0.2}},
        ],
        "eval": {"tasks": ["merger_arithmetic"], "limit": 4},
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "sweep"
    for _ in range(2):
        result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output + result.stderr
        assert "%|" not in result.output + result.stderr, "the libraries' progress bars belong in the log"
    db = sqlite3.connect(out / "journal.sqlite")
    runs = dict(db.execute("SELECT stage, runs FROM stages WHERE stage NOT LIKE 'eval-%'"))
    assert runs == {"merge": 1, "train-1-pretrain": 1, "train-2-dpo": 1, "train-3-dpo": 1}
    history = json.loads((out / "best" / "merger_train.json").read_text())
    cid = json.loads((out / "leaderboard.json").read_text())[0]["id"]
    folder = out / "candidates" / cid
    assert [h["base_model"] for h in history] == [
        str(folder / "merged"),
        str(folder / "step-1"),
        str(folder / "step-2"),
    ]
    assert [h["settings"].get("beta") for h in history] == [None, 0.1, 0.2]
    assert sorted(p.name for p in folder.iterdir()) == ["model"]
