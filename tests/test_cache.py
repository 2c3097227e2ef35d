"""The per-item cache: a model scored once on an item is read back, never scored again; an entry is never served
to other weights, another tokenizer, other eval settings or another backend; a process killed while writing leaves
it readable."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_sweep import slerp_recipe, write

from merger.config.recipe import EvalSettings, expand
from merger.evaluate.cache import ItemCache, live_model, runtime
from merger.evaluate.evaluator import evaluate, make_lm
from merger.merge.run import merge_in_memory, merge_to_disk

SETTINGS = EvalSettings(tasks=["merger_arithmetic"], num_fewshot=0)


def score(folder, settings=SETTINGS, limit=8, cache=True, backend="merger"):
    """(report, how many model loads it took) for a folder, through the cache as `merger eval` does."""
    settings = settings.model_copy(update={"backend": backend})
    loads = []

    def lm():
        loads.append(folder)
        return make_lm(settings, folder=folder, device="cpu")

    store = ItemCache() if cache else None
    model = store.folder_model(folder, runtime(backend, "cpu")) if store else None
    try:
        return evaluate(lm, settings, limit=limit, show_progress=False, cache=store, model=model), len(loads)
    finally:
        if store:
            store.close()


def same(a, b):
    """Two reports equal in every item and every figure but the time taken and the count read from the cache."""

    def plain(report):
        return {
            t: {k: v for k, v in s.model_dump().items() if k not in ("seconds", "cached")}
            for t, s in report.tasks.items()
        }

    return plain(a) == plain(b) and [i.model_dump() for i in a.items] == [i.model_dump() for i in b.items]


def test_cached_items_are_read_back_and_combine_with_new_ones_exactly(tiny_models):
    first, loads = score(tiny_models["a"], limit=6)
    assert loads == 1 and first.tasks["merger_arithmetic"].cached == 0
    again, loads = score(tiny_models["a"], limit=6)
    assert loads == 0, "every item cached: the model is not even loaded"
    assert again.tasks["merger_arithmetic"].cached == 6 and same(first, again)
    more, _ = score(tiny_models["a"], limit=10)  # 6 from the cache, 4 scored
    fresh, _ = score(tiny_models["a"], limit=10, cache=False)
    assert more.tasks["merger_arithmetic"].cached == 6 and same(more, fresh), "the mean over both is lm-eval's"


def test_with_shots_a_record_holds_only_for_the_same_runs_documents(tiny_models):
    """lm-eval draws each document's few-shot examples in turn from one seeded sampler, so a 2-shot document scored
    among 6 has other examples than among 10: those are scored again (and equal a run without the cache), the same
    10 are read back."""
    shots = SETTINGS.model_copy(update={"num_fewshot": 2})
    score(tiny_models["a"], shots, limit=6)
    more, _ = score(tiny_models["a"], shots, limit=10)
    assert more.tasks["merger_arithmetic"].cached == 0 and same(more, score(tiny_models["a"], shots, 10, False)[0])
    again, loads = score(tiny_models["a"], shots, limit=10)
    assert again.tasks["merger_arithmetic"].cached == 10 and loads == 0 and same(again, more)


def test_an_entry_is_never_served_to_other_weights_tokenizer_settings_or_backend(tiny_models, tmp_path):
    score(tiny_models["a"])
    copy = shutil.copytree(tiny_models["a"], tmp_path / "copy")
    assert score(copy)[0].tasks["merger_arithmetic"].cached == 8, "the same weights elsewhere: the same model"
    assert score(tiny_models["b"])[0].tasks["merger_arithmetic"].cached == 0, "other weights"
    (copy / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert score(copy)[0].tasks["merger_arithmetic"].cached == 0, "another tokenizer (chat template)"
    shots = SETTINGS.model_copy(update={"num_fewshot": 2})
    assert score(tiny_models["a"], shots)[0].tasks["merger_arithmetic"].cached == 0, "other eval settings"
    system = SETTINGS.model_copy(update={"system_instruction": "Be brief."})
    assert score(tiny_models["a"], system)[0].tasks["merger_arithmetic"].cached == 0
    assert score(tiny_models["a"], backend="hf")[0].tasks["merger_arithmetic"].cached == 0, "another backend"
    seed = SETTINGS.model_copy(update={"seed": 7})  # another item order: the same items, positions set again
    reordered = score(tiny_models["a"], seed, limit=None)[0]
    fresh = score(tiny_models["a"], seed, limit=None, cache=False)[0]
    assert reordered.tasks["merger_arithmetic"].cached == 8 and same(reordered, fresh)


def test_a_merge_in_memory_and_its_saved_folder_are_one_model(tiny_models, tmp_path):
    """A sweep knows a live candidate by the digest of its merged tensors: saved, the folder is the same model."""
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3]))
    [c] = expand(recipe)
    merged = merge_in_memory(c, device="cpu", digest=True)
    merge_to_disk(c, tmp_path / "saved", device="cpu", quiet=True)
    store = ItemCache()
    try:
        live = live_model(merged.digest, merged.model, merged.tokenizer, runtime("merger", "cpu"))
        assert live.key == store.folder_model(tmp_path / "saved", runtime("merger", "cpu")).key
    finally:
        store.close()


WRITER = """
import sys
from merger.config.results import ItemRecord
from merger.evaluate.cache import ItemCache
cache = ItemCache(sys.argv[1])
print("ready", flush=True)
for batch in range(10**6):
    cache.put("m", "t", {f"{batch}/{i}": ItemRecord(task="t", id=str(i), doc_id=i, lls=[0.5] * 64) for i in range(500)})
"""


def test_a_process_killed_while_writing_leaves_the_cache_readable(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    store = ItemCache(tmp_path)
    try:
        rows = store.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        assert rows > 0 and rows % 500 == 0, "each write all or nothing"
        assert len(store.get("m", "t", [f"0/{i}" for i in range(500)])) == 500
    finally:
        store.close()


@pytest.mark.parametrize("flag", [True, False])
def test_merger_eval_no_cache_scores_again(tiny_models, tmp_path, flag):
    from typer.testing import CliRunner

    from merger.cli import app

    args = ["eval", str(tiny_models["a"]), "--tasks", "merger_arithmetic", "--limit", "4", "--device", "cpu"]
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, [*args, "--json", str(tmp_path / "s.json"), *(["--no-cache"] if flag else [])])
        assert result.exit_code == 0, result.output
    cached = json.loads((tmp_path / "s.json").read_text())["tasks"]["merger_arithmetic"]["cached"]
    assert cached == (0 if flag else 4)
