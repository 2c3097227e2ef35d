"""merger's backend against lm-eval's own `hf` model, through the same lm-eval tasks on the same items.

Both run lm-eval's evaluator (prompts, few-shot samples, filters, metrics); only the model backend differs. Per item:
log-likelihoods within 1e-3, identical metrics (except where two choices are within 1e-3), identical generations.
Real benchmark data comes from the hub mirror in shared/evaldata/hub; custom task YAMLs are written here.
"""

import json
import textwrap

import pytest
from conftest import HUB

from merger.config.recipe import EvalSettings
from merger.evaluate.evaluator import evaluate, make_lm
from merger.evaluate.model import load_model

TOL = 1e-3


def near_tie(lls) -> bool:
    values = sorted(lls, reverse=True)
    return len(values) > 1 and values[0] - values[1] < TOL


def agree(model, tokenizer, **settings):
    ours_settings = EvalSettings(data_dir=str(HUB), **settings)
    ours = evaluate(make_lm(ours_settings, model, tokenizer), ours_settings, show_progress=False)
    ref_settings = ours_settings.model_copy(update={"backend": "hf", "batch_size": 1})
    ref = evaluate(make_lm(ref_settings, model, tokenizer), ref_settings, show_progress=False)
    assert [i.id for i in ours.items] == [i.id for i in ref.items] and ours.items
    for a, b in zip(ours.items, ref.items):
        if a.lls is not None:
            assert len(a.lls) == len(b.lls) and max(abs(x - y) for x, y in zip(a.lls, b.lls)) < TOL, a.id
            if not near_tie(a.lls):
                assert a.metrics == pytest.approx(b.metrics, abs=TOL), a.id
        else:
            assert a.generation == b.generation, a.id
            assert a.metrics == b.metrics, a.id
    for task, score in ours.tasks.items():
        assert score.n == ref.tasks[task].n and score.num_fewshot == ref.tasks[task].num_fewshot
    return ours


@pytest.fixture(scope="module")
def live(smollm2):
    return load_model(smollm2, "cpu")


@pytest.mark.parametrize(
    "tasks, shots, limit, batch_size, gen_kwargs",
    [
        ("arc_challenge", 3, 6, 4, None),  # padded batches of several items: masks and positions must not leak
        ("hellaswag", 3, 4, None, None),
        ("mmlu", 5, 4, None, None),
        ("mmlu_anatomy", 0, 26, 8, None),  # a subtask by name (a quoted-key YAML): every mirrored item
        ("truthfulqa_mc2", 0, 4, 4, None),
        ("winogrande", 0, 6, None, None),
        ("gsm8k", 2, 20, None, "max_gen_toks=64"),  # 20 generations identical to lm-eval hf's
        ("leaderboard_bbh_boolean_expressions", None, 6, None, None),
        ("leaderboard_musr_team_allocation", None, 2, None, None),
        ("leaderboard_mmlu_pro", None, 3, None, None),
        ("leaderboard_math_algebra_hard", None, 2, None, "max_gen_toks=32"),
        ("leaderboard_ifeval", None, 2, None, "max_gen_toks=32"),
    ],
)
def test_smollm2_agrees_with_lm_eval_hf(live, tasks, shots, limit, batch_size, gen_kwargs):
    ours = agree(*live, tasks=[tasks], num_fewshot=shots, limit=limit, batch_size=batch_size, gen_kwargs=gen_kwargs)
    assert ours.tasks[tasks].n == limit


MC_UTILS = """
def process(dataset):
    return dataset.map(lambda d: {"question": d["q"].strip().capitalize(), "options": d["opts"].split("|")})
"""


@pytest.fixture(scope="module")
def custom_tasks(tmp_path_factory):
    """A user's own task folder: multiple choice with a `!function` doc processor, a generation task with a regex
    filter, a log-likelihood task and a perplexity task, over a local JSONL file."""
    root = tmp_path_factory.mktemp("my_tasks")
    rows = [
        {"q": f"what is {a} plus {b}?", "opts": f"{a + b}|{a + b + 1}|{a * b}", "gold": 0, "answer": str(a + b)}
        for a, b in [(2, 3), (4, 5), (7, 1), (6, 6), (3, 9), (8, 2)]
    ]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "utils.py").write_text(MC_UTILS)
    (root / "my_mc.yaml").write_text(
        "task: my_mc\n"
        + common
        + textwrap.dedent("""\
        output_type: multiple_choice
        process_docs: !function utils.process
        doc_to_text: "Question: {{question}}\\nAnswer:"
        doc_to_choice: "{{options}}"
        doc_to_target: gold
        metric_list:
          - metric: acc
          - metric: acc_norm
        """)
    )
    (root / "my_gen.yaml").write_text(
        "task: my_gen\n"
        + common
        + textwrap.dedent("""\
        output_type: generate_until
        doc_to_text: "Q: {{q}}\\nA:"
        doc_to_target: "{{answer}}"
        generation_kwargs:
          until: ["\\n"]
          max_gen_toks: 12
          do_sample: false
        filter_list:
          - name: first-number
            filter:
              - function: regex
                regex_pattern: "(-?[0-9]+)"
              - function: take_first
        metric_list:
          - metric: exact_match
        """)
    )
    (root / "my_ll.yaml").write_text(
        "task: my_ll\n"
        + common
        + textwrap.dedent("""\
        output_type: loglikelihood
        doc_to_text: "Q: {{q}}\\nA:"
        doc_to_target: " {{answer}}"
        metric_list:
          - metric: perplexity
          - metric: acc
        """)
    )
    (root / "my_ppl.yaml").write_text(
        "task: my_ppl\n"
        + common
        + textwrap.dedent("""\
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{q}} The answer is {{answer}}."
        metric_list:
          - metric: word_perplexity
          - metric: byte_perplexity
          - metric: bits_per_byte
        """)
    )
    return root


@pytest.mark.parametrize("task", ["my_mc", "my_gen", "my_ll", "my_ppl"])
def test_custom_task_yamls_agree(tiny_models, custom_tasks, task):
    model, tokenizer = load_model(tiny_models["a"], "cpu")
    ours = agree(model, tokenizer, tasks=[task], include_path=[str(custom_tasks)])
    assert ours.tasks[task].n == ours.tasks[task].n_total == 6
    if task == "my_gen":
        assert all(item.generation is not None for item in ours.items)


def test_demo_task_needs_no_data(tiny_models):
    model, tokenizer = load_model(tiny_models["a"], "cpu")
    ours = agree(model, tokenizer, tasks=["merger_arithmetic"], limit=6)
    assert ours.tasks["merger_arithmetic"].num_fewshot == 5 and ours.tasks["merger_arithmetic"].n_total == 500


def test_requests_packed_in_one_row_score_as_alone(tiny_models):
    """An item's requests packed after their shared prefix, with nothing shared (truncated from the left), and
    several items in one padded batch: every request scores as it does on its own."""
    from merger.evaluate.scoring import Encoded, score_items, shared_prefix

    model, tokenizer = load_model(tiny_models["a"], "cpu")

    def request(inp: list[int], n_cont: int) -> Encoded:
        return Encoded(inp=inp, cont=inp[len(inp) - n_cont + 1 :] + [7], ctx_len=len(inp) - n_cont + 1)

    shared = [request([1, 5, 9, 12, 3, 4], 2), request([1, 5, 9, 12, 8], 1), request([1, 5, 9, 12, 30, 31, 2], 3)]
    apart = [request([4, 5, 6, 7], 2), request([9, 10, 11], 1), request([13, 14, 15, 16, 17], 3)]
    assert shared_prefix(shared) == 4 and shared_prefix(apart) == 0
    alone = [score_items(model, [[r]], tokenizer.pad_token_id or 0, 1)[0][0] for r in shared + apart]
    for budget in (1, 10_000):  # one item per batch, and both in one padded batch
        together = score_items(model, [shared, apart], tokenizer.pad_token_id or 0, budget)
        for (ll, greedy), (ll_alone, greedy_alone) in zip(together[0] + together[1], alone):
            assert abs(ll - ll_alone) < 1e-4 and greedy == greedy_alone


def test_generation_with_a_tokenizer_without_a_pad_token(tiny_models, custom_tasks):
    """Llama-2, Mistral and Llama-3 tokenizers have no pad token: padded generation batches still run, and the pad
    token merger picks is the one lm-eval's hf model picks."""
    from lm_eval.models.huggingface import HFLM

    from merger.evaluate.lm import MergerLM

    model, tokenizer = load_model(tiny_models["a"], "cpu")
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    ours = agree(model, tokenizer, tasks=["my_gen"], include_path=[str(custom_tasks)], batch_size=4)
    assert all(item.generation is not None for item in ours.items)
    fresh = [load_model(tiny_models["a"], "cpu")[1] for _ in range(2)]
    for t in fresh:
        t.pad_token = None
    assert (
        MergerLM(model=model, tokenizer=fresh[0]).pad_id
        == HFLM(pretrained=model, tokenizer=fresh[1]).tokenizer.pad_token_id
    )


def test_logits_only_at_the_wanted_positions(tiny_models):
    """A 2-D boolean `logits_to_keep`: the vocabulary projection sees exactly the positions that score a
    continuation token, row by row, and the log-likelihoods are those of scoring each request alone."""
    from merger.evaluate.scoring import Encoded, score_items

    model, _ = load_model(tiny_models["a"], "cpu")
    rows = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    items = [
        [Encoded(inp=[1, 5, 9, 12, 3], cont=[3, 4], ctx_len=4), Encoded(inp=[1, 5, 9, 12], cont=[8], ctx_len=4)],
        [Encoded(inp=[4, 5, 6, 7, 2, 2], cont=[6, 7, 2, 2, 9], ctx_len=2)],
    ]
    together = score_items(model, items, 0, 10_000)
    assert rows == [2 + 5], "one forward; the 7 positions that predict a continuation token (the last shared one once)"
    hook.remove()
    alone = [score_items(model, [[r]], 0, 1)[0][0] for item in items for r in item]
    assert all(abs(a[0] - b[0]) < 1e-5 for a, b in zip(together[0] + together[1], alone))


def test_out_of_memory_halves_the_batch_then_is_one_line(tiny_models, monkeypatch):
    import torch

    from merger.core.errors import UserError
    from merger.evaluate import scoring
    from merger.evaluate.scoring import Encoded, score_items

    model, _ = load_model(tiny_models["a"], "cpu")
    items = [[Encoded(inp=[1, 5, 9, k], cont=[k], ctx_len=4)] for k in range(3, 11)]
    expected = score_items(model, items, 0, 10_000)
    real, sizes = scoring.score_group, []

    def only_one_item_fits(model, batch, prefixes, pad_id):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model, batch, prefixes, pad_id)

    monkeypatch.setattr(scoring, "score_group", only_one_item_fits)
    halved = score_items(model, items, 0, 10_000)
    assert [[round(ll, 4) for ll, _ in item] for item in halved] == [[round(ll, 4) for ll, _ in e] for e in expected]
    assert sizes == [8, 4, 2, 2, 4, 2, 2], "halved until it fits, nothing lost or scored twice"

    def nothing_fits(model, batch, prefixes, pad_id):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(scoring, "score_group", nothing_fits)
    with pytest.raises(UserError, match="one item of 4 tokens does not fit on the GPU even alone"):
        score_items(model, items, 0, 10_000)


def test_generation_out_of_memory_halves_then_is_one_line(tiny_models, custom_tasks, monkeypatch):
    import torch

    from merger.core.errors import UserError

    model, tokenizer = load_model(tiny_models["a"], "cpu")
    settings = EvalSettings(tasks=["my_gen"], include_path=[str(custom_tasks)], batch_size=4)
    expected = [
        i.generation for i in evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False).items
    ]
    real, rows = model.generate, []

    def small_card(input_ids, **kwargs):
        rows.append(input_ids.shape[0])
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "generate", small_card)
    found = [i.generation for i in evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False).items]
    assert found == expected and max(rows) == 4 and rows.count(1) == 6
    monkeypatch.setattr(model, "generate", lambda **kwargs: (_ for _ in ()).throw(torch.OutOfMemoryError("OOM")))
    with pytest.raises(UserError, match="does not fit on the GPU even alone.*max_gen_toks"):
        evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False)


LLAMA2_7B = dict(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128, element=2)


def test_generation_rows_from_the_memory_each_batch_needs():
    from merger.evaluate.lm import generation_rows, row_bytes
    from merger.evaluate.scoring import Shape

    shape = Shape(**LLAMA2_7B, free=0)
    # by hand: KV (1,000 + 256) x 0.5 MiB, one layer's prefill activations 1,000 x 115,200 bytes, the scores
    # 32 heads x 1,000^2 x 2 bytes, the float32 logits and scores 8 x 32,000
    assert row_bytes(shape, 1000, 256, 32000) == 1256 * 524288 + 1000 * 115200 + 64_000_000 + 256_000 == 837_961_728
    free = 10 * 2**30
    assert generation_rows([1000] * 30, 256, shape, 32000, free) == [12, 12, 6]  # 10 GiB / 837,961,728 = 12.8
    # a batch is padded to its first (longest) prompt: 5 long ones take 7 short ones with them; the other 33 short
    # ones (264,931,328 bytes a row at 200 tokens: 40 fit) go in one batch
    assert generation_rows([1000] * 5 + [200] * 40, 256, shape, 32000, free) == [12, 33]
    assert generation_rows([4000, 10], 256, shape, 32000, 2**20) == [1, 1], "one row at least: OOM is the judge"


def test_generation_batches_fill_a_faked_free_memory_and_keep_the_generations(tiny_models, custom_tasks, monkeypatch):
    import torch

    from merger.evaluate import lm as lm_module

    model, tokenizer = load_model(tiny_models["a"], "cpu")
    settings = EvalSettings(tasks=["my_gen"], include_path=[str(custom_tasks)], batch_size=1)
    one_by_one = evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False)
    monkeypatch.setattr(lm_module, "CPU_GENERATE_BATCH", None)  # the GPU's rule, on a CPU
    settings = settings.model_copy(update={"batch_size": None})
    for free, rows in [(10**9, [6]), (0, [1] * 6)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        lm = make_lm(settings, model, tokenizer)
        packed = evaluate(lm, settings, show_progress=False)
        assert lm.rows == rows
        assert [i.generation for i in packed.items] == [i.generation for i in one_by_one.items]
        assert [i.metrics for i in packed.items] == [i.metrics for i in one_by_one.items]


def test_static_cache_generations_equal_lm_eval_hf(live):
    """The static KV cache (what a GPU compiles) gives lm-eval hf's greedy generations, checked here uncompiled."""
    model, tokenizer = live
    settings = EvalSettings(data_dir=str(HUB), tasks=["gsm8k"], num_fewshot=2, limit=3, gen_kwargs="max_gen_toks=48")
    lm = make_lm(settings, model, tokenizer)
    lm.static_cache = True
    ours = evaluate(lm, settings, show_progress=False)
    ref_settings = settings.model_copy(update={"backend": "hf", "batch_size": 1})
    ref = evaluate(make_lm(ref_settings, model, tokenizer), ref_settings, show_progress=False)
    assert [i.generation for i in ours.items] == [i.generation for i in ref.items]
