"""Recipe parsing, sweep expansion and depth up-scaling, on tiny random models."""

from pathlib import Path

import pytest
import yaml

from merger.config.recipe import expand
from merger.core.errors import UserError


def write(tmp_path: Path, data, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def slerp(a, b, t=0.5):
    return {
        "merge_method": "slerp",
        "base_model": str(a),
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 4]}, {"model": str(b), "layer_range": [0, 4]}]}],
        "parameters": {"t": t},
        "dtype": "float32",
    }


def test_plain_mergekit_config_is_a_recipe(tmp_path, tiny_models):
    [c] = expand(write(tmp_path, slerp(tiny_models["a"], tiny_models["b"])))
    assert c.merge == slerp(tiny_models["a"], tiny_models["b"])
    assert c.params == {}


def test_wrapped_recipe_equals_plain_config(tmp_path, tiny_models):
    config = slerp(tiny_models["a"], tiny_models["b"])
    [plain] = expand(write(tmp_path, config, "plain.yaml"))
    [wrapped] = expand(write(tmp_path, {"merge": config}, "wrapped.yaml"))
    assert plain.id == wrapped.id and plain.merge == wrapped.merge


def test_sweep_grid_order_ids_and_gradients(tmp_path, tiny_models):
    gradient = [0, 0.5, 1]
    config = slerp(tiny_models["a"], tiny_models["b"])
    config["parameters"]["t"] = [{"filter": "self_attn", "value": gradient}, {"value": 0.5}]
    recipe = {
        "merge": config,
        "sweep": {"merge.parameters.t.1.value": [0.3, 0.7], "merge.dtype": ["float32", "bfloat16"]},
    }
    candidates = expand(write(tmp_path, recipe))
    assert [(c.params["merge.parameters.t.1.value"], c.params["merge.dtype"]) for c in candidates] == [
        (0.3, "float32"),
        (0.3, "bfloat16"),
        (0.7, "float32"),
        (0.7, "bfloat16"),
    ]
    # The gradient inside the config is passed through untouched, never expanded as an axis.
    assert all(c.merge["parameters"]["t"][0]["value"] == gradient for c in candidates)
    assert [c.merge["parameters"]["t"][1]["value"] for c in candidates] == [0.3, 0.3, 0.7, 0.7]
    ids = [c.id for c in candidates]
    assert len(set(ids)) == 4 and all(len(i) == 10 for i in ids)
    assert ids == [c.id for c in expand(write(tmp_path, recipe, "again.yaml"))], "ids must be stable"


def test_sweep_values_may_themselves_be_gradients(tmp_path, tiny_models):
    recipe = {
        "merge": slerp(tiny_models["a"], tiny_models["b"]),
        "sweep": {"merge.parameters.t": [[0, 1], [1, 0], 0.5]},
    }
    candidates = expand(write(tmp_path, recipe))
    assert [c.merge["parameters"]["t"] for c in candidates] == [[0, 1], [1, 0], 0.5]


def test_changed_recipe_changes_ids(tmp_path, tiny_models):
    [one] = expand(write(tmp_path, slerp(tiny_models["a"], tiny_models["b"], 0.5), "one.yaml"))
    [two] = expand(write(tmp_path, slerp(tiny_models["a"], tiny_models["b"], 0.6), "two.yaml"))
    assert one.id != two.id


def test_depth_upscale_reads_layers_from_config(tmp_path, tiny_models):
    [c] = expand(write(tmp_path, {"depth_upscale": {"model": str(tiny_models["a"]), "overlap": 1}}))
    assert c.merge["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in c.merge["slices"]] == [[0, 3], [1, 4]]


def test_depth_upscale_solar_shape(tmp_path):
    recipe = {"depth_upscale": {"model": "mistralai/Mistral-7B-v0.1", "layers": 32, "overlap": 8}}
    [c] = expand(write(tmp_path, recipe))
    ranges = [s["sources"][0]["layer_range"] for s in c.merge["slices"]]
    assert ranges == [[0, 24], [8, 32]]
    assert sum(b - a for a, b in ranges) == 48


def test_depth_upscale_overlap_is_sweepable(tmp_path, tiny_models):
    recipe = {
        "depth_upscale": {"model": str(tiny_models["a"]), "overlap": 1},
        "sweep": {"depth_upscale.overlap": [1, 2]},
    }
    assert [
        sum(s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0] for s in c.merge["slices"])
        for c in expand(write(tmp_path, recipe))
    ] == [6, 4]


@pytest.mark.parametrize(
    "axis, message",
    [
        ("merge.nope.t", "does not exist"),
        ("merge.slices.5.sources", "outside a list"),
        ("parameters.t", "must start with a recipe section"),
        ("merge.slices.x", "must be a number"),
    ],
)
def test_bad_sweep_paths(tmp_path, tiny_models, axis, message):
    recipe = {"merge": slerp(tiny_models["a"], tiny_models["b"]), "sweep": {axis: [1, 2]}}
    with pytest.raises(UserError) as info:
        expand(write(tmp_path, recipe))
    assert message in str(info.value) and f"sweep.{axis}" in str(info.value)


def test_a_preserving_up_scale_computes_what_its_source_computes(tmp_path, tiny_models):
    """`preserve: true`: the repeated layers start with zeroed output projections, so the up-scaled model's logits
    are the source's; the plain up-scale's are not; mergekit's own run on the resolved config gives the same tensors."""
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    from transformers import AutoModelForCausalLM

    from merger.core.digest import folder_digest
    from merger.merge.run import merge_in_memory, merge_to_disk

    source = AutoModelForCausalLM.from_pretrained(tiny_models["a"], dtype=torch.float32).eval()
    ids = torch.randint(3, 250, (4, 24), generator=torch.Generator().manual_seed(0))
    expected = source(input_ids=ids).logits
    for preserve, same in ((True, True), (False, False)):
        dus = {"model": str(tiny_models["a"]), "overlap": 1, "dtype": "float32", "preserve": preserve}
        [c] = expand(write(tmp_path, {"depth_upscale": dus}, f"dus-{preserve}.yaml"))
        model = merge_in_memory(c, device="cpu", digest=False).model
        assert model.config.num_hidden_layers == 6
        with torch.no_grad():
            assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5) is same
    merge_to_disk(c := expand(tmp_path / "dus-True.yaml")[0], tmp_path / "ours", device="cpu", quiet=True)
    run_merge(MergeConfiguration.model_validate(c.merge), str(tmp_path / "theirs"), MergeOptions(random_seed=0))
    assert folder_digest(tmp_path / "ours") == folder_digest(tmp_path / "theirs")
