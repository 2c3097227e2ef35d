import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from tiny import make_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EVALDATA = REPO.parent / "shared" / "evaldata"
HUB = EVALDATA / "hub"  # a mirror of the hub datasets lm-eval's tasks read
SMOLLM2_FIXTURES = {"smollm2", "smollm2_variant", "outputs", "live"}


@pytest.fixture(autouse=True)
def item_cache(tmp_path, monkeypatch) -> Path:
    """Each test its own per-item cache (`evaluate/cache.py`), so no test reads what another scored."""
    root = tmp_path / "item-cache"
    monkeypatch.setenv("MERGER_ITEM_CACHE", str(root))
    return root


def pytest_collection_modifyitems(items):
    """Every test that loads SmolLM2 is slow, whether or not it says so; training and lm-eval tests say so."""
    for item in items:
        if SMOLLM2_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny Llamas sharing a tokenizer (a, b, c) plus odd ones for the failure cases."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "a": make_tiny_llama(root / "a", seed=1),
        "b": make_tiny_llama(root / "b", seed=2),
        "c": make_tiny_llama(root / "c", seed=3),
        "wide": make_tiny_llama(root / "wide", seed=4, hidden=128),
        "untied": make_tiny_llama(root / "untied", seed=5, tied=False),
        "pickled": make_tiny_llama(root / "pickled", seed=6, pickle=True),
        "extra_vocab": make_tiny_llama(root / "extra_vocab", seed=7, extra_tokens=[f"<x{i}>" for i in range(40)]),
    }


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct, converted once and cached (see `merger models prepare`)."""
    from merger.core.demo import prepare

    return prepare("smollm2")


@pytest.fixture(scope="session")
def smollm2_variant(smollm2, tmp_path_factory) -> Path:
    """A lightly perturbed copy of SmolLM2, standing in for a sibling fine-tune to merge with."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("variant") / "smollm2-ft"
    shutil.copytree(smollm2, folder)
    g = torch.Generator().manual_seed(1)
    weights = load_file(smollm2 / "model.safetensors")
    noisy = {k: v + 0.001 * v.float().std() * torch.randn(v.shape, generator=g) for k, v in weights.items()}
    save_file(noisy, folder / "model.safetensors", metadata={"format": "pt"})
    return folder
