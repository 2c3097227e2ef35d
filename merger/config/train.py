"""Training settings, one model per trl trainer, as trl pairs each trainer with its config: `SFTSettings` (continued
pretraining and SFT, optionally distilled from a teacher) and `DPOSettings`. They share `TrainSettings` (and LoRA's
`LoraSettings`) by inheritance, so each is flat: `merger train` and `merger dpo` generate their flags, defaults and
help from these fields, and a recipe's `train:` steps are checked against the same models.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# trl 1.16's DPOTrainer losses (it lists them only in its docs and error messages; a test pins them to its help).
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


class LoraSettings(BaseModel):
    """How the weights are adapted: LoRA (the default), QLoRA, or all of them."""

    model_config = ConfigDict(extra="forbid")

    full: bool = Field(False, description="Full fine-tuning instead of LoRA.")
    qlora: bool = Field(False, description="4-bit QLoRA (CUDA and bitsandbytes).")
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | str = Field("all-linear", description="Modules LoRA adapts (peft's names).")
    layers: str | None = Field(
        None,
        description="Train only these decoder layers: 'inserted' (the layers a depth up-scale repeated, read from "
        "the model's mergekit_config.yml) or indices and ranges like '22-35,40' (default: all).",
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: str | None) -> str | None:
        if value is not None and value != "inserted":
            layer_list(value)
        return value


class TrainSettings(LoraSettings):
    """What every trainer shares: the data, the schedule, checkpoints, the contamination check, held-out perplexity."""

    data: str = Field(description="The training data: a JSONL file or a hub dataset id.")
    lr: float | None = Field(
        None, gt=0, description="Learning rate (default with LoRA: 2e-4 SFT, 5e-5 DPO; a tenth of it with full)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(2, gt=0, description="Rows per device batch.")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps.")
    max_length: int = Field(1024, gt=0, description="Longest training sequence, in tokens.")
    decontaminate: bool = Field(False, description="Drop training rows that overlap eval items (13-grams).")
    against: list[str] | None = Field(
        None, description="lm-eval tasks to check for overlap (default: the openllm-v1 tasks the data dir mirrors)."
    )
    data_dir: str | None = Field(None, description="Local mirror of the tasks' hub datasets, for the check.")
    include_path: list[str] = Field(default_factory=list, description="Folders of your own lm-eval task YAMLs.")
    heldout: str | None = Field(
        None, description="Plain text ({'text'} JSONL) whose perplexity is measured before and after training."
    )
    heldout_texts: int = Field(32, gt=0, description="Held-out texts measured (the first N, each up to max_length).")
    seed: int = Field(42, description="Training seed.")
    save_steps: int = Field(25, gt=0, description="Checkpoint every N steps, so an interrupted run resumes.")

    LORA_LR: ClassVar[float] = 5e-5  # the default learning rate with LoRA; full fine-tuning takes a tenth

    @property
    def learning_rate(self) -> float:
        """Full fine-tuning wants a learning rate about ten times smaller than LoRA."""
        return self.lr if self.lr is not None else (self.LORA_LR / 10 if self.full else self.LORA_LR)


class SFTSettings(TrainSettings):
    """Continued pretraining ({'text'} rows, packed) or SFT (chat 'messages', or prompt with completion or
    chosen), on trl's SFTTrainer; with `distill`, cross-entropy mixed with KL to a teacher's logits."""

    LORA_LR: ClassVar[float] = 2e-4

    packing: bool | None = Field(
        None, description="Pack rows into max_length sequences (default: for plain text, not for chat)."
    )
    distill: bool = Field(False, description="Distil from a teacher: loss = (1-kl_weight) CE + kl_weight KL.")
    teacher: str | None = Field(
        None, description="The teacher (default: the model a depth up-scale was built from, per mergekit_config.yml)."
    )
    kl_weight: float = Field(0.5, ge=0, le=1, description="Distillation: the KL term's weight (CE gets the rest).")
    temperature: float = Field(2.0, gt=0, description="Distillation: softmax temperature of both models' logits.")


class DPOSettings(TrainSettings):
    """Preference refinement with trl's DPOTrainer, against the input model as reference (stepwise DPO: each step's
    reference is the step before's output)."""

    beta: float = Field(0.1, gt=0, description="DPO's beta: how far the model may move from the reference.")
    loss_type: str = Field("sigmoid", description="trl's DPO loss: " + ", ".join(LOSS_TYPES) + ".")
    overlong: Literal["drop", "truncate"] = Field("drop", description="drop or truncate pairs over max_length.")
    precompute_ref_log_probs: bool = Field(False, description="Score the reference model once, before training.")

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type '{value}'; trl knows: {', '.join(LOSS_TYPES)}")
        return value


KINDS: dict[str, type[TrainSettings]] = {"pretrain": SFTSettings, "sft": SFTSettings, "dpo": DPOSettings}
LABELS = {"pretrain": "continued pretraining", "sft": "SFT", "dpo": "DPO"}


class TrainStep(BaseModel):
    """One training step of a recipe's `train:` list: exactly one of `pretrain` (plain text), `sft` (chat data) or
    `dpo` (preference pairs). Each step trains the output of the one before."""

    model_config = ConfigDict(extra="forbid")

    pretrain: SFTSettings | None = Field(None, description="Continued pretraining on plain text.")
    sft: SFTSettings | None = Field(None, description="Supervised fine-tuning on chat data.")
    dpo: DPOSettings | None = Field(None, description="DPO on preference pairs.")

    @model_validator(mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        if isinstance(value, dict) and len([k for k in value if k in KINDS]) != 1:
            raise ValueError(f"a train step is exactly one of {', '.join(KINDS)}, e.g. `- sft: {{data: ...}}`")
        return value

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def settings(self) -> TrainSettings:
        return getattr(self, self.kind)

    def dump(self) -> dict[str, Any]:
        """{kind: settings with defaults filled in}: what a step's identity is made of."""
        return {self.kind: self.settings.model_dump(mode="json")}


def layer_list(text: str) -> list[int]:
    """'22-35,40' -> [22, ..., 35, 40]."""
    layers: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise ValueError(f"'{text}' is not 'inserted' or layer indices and ranges like '22-35,40'")
        layers.extend(range(int(low), int(high or low) + 1))
    return sorted(set(layers))


def inserted_layers(merge: dict[str, Any]) -> list[int]:
    """The output layers of a passthrough stack that repeat a (model, layer) already stacked below them: the layers
    a depth up-scale inserted. [] for any other config."""
    if merge.get("merge_method") != "passthrough":
        return []
    seen: set[tuple[str, int]] = set()
    inserted, position = [], 0
    for piece in merge.get("slices") or []:
        source = piece["sources"][0]
        for layer in range(*source["layer_range"]):
            if (str(source["model"]), layer) in seen:
                inserted.append(position)
            seen.add((str(source["model"]), layer))
            position += 1
    return inserted


def upscaled_from(merge: dict[str, Any]) -> str | None:
    """The one model a passthrough stack is built from (a depth up-scale's source, the default teacher), else None."""
    if merge.get("merge_method") != "passthrough":
        return None
    models = {str(s["model"]) for piece in merge.get("slices") or [] for s in piece["sources"]}
    return models.pop() if len(models) == 1 else None
