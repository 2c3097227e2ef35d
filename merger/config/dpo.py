"""`DPOSettings`: the `dpo:` section of a recipe and the flags of `merger dpo`, one model for both, as trl pairs
each trainer with its config. The CLI's flags, their defaults and their help are generated from these fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# trl 1.16's DPOTrainer losses (it lists them only in its docs and error messages).
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


class DPOSettings(BaseModel):
    """How a model is refined with DPO."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Preference pairs: a JSONL file or a hub dataset id (prompt, chosen, rejected).")
    full: bool = Field(False, description="Full fine-tuning instead of LoRA.")
    qlora: bool = Field(False, description="4-bit QLoRA (CUDA and bitsandbytes).")
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | str = Field("all-linear", description="Modules LoRA adapts (peft's names).")
    beta: float = Field(0.1, gt=0, description="DPO's beta: how far the model may move from the reference.")
    loss_type: str = Field("sigmoid", description="trl's DPO loss: " + ", ".join(LOSS_TYPES) + ".")
    lr: float | None = Field(None, gt=0, description="Learning rate (default 5e-5 with LoRA, 5e-6 full).")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(2, gt=0, description="Pairs per device batch.")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps.")
    max_length: int = Field(1024, gt=0, description="Longest prompt + completion, in tokens.")
    overlong: Literal["drop", "truncate"] = Field("drop", description="drop or truncate pairs over max_length.")
    precompute_ref_log_probs: bool = Field(False, description="Score the reference model once, before training.")
    decontaminate: bool = Field(False, description="Drop pairs that overlap eval items (13-grams).")
    against: list[str] | None = Field(
        None, description="lm-eval tasks to check for overlap (default: the openllm-v1 tasks the data dir mirrors)."
    )
    data_dir: str | None = Field(None, description="Local mirror of the tasks' hub datasets, for the check.")
    include_path: list[str] = Field(default_factory=list, description="Folders of your own lm-eval task YAMLs.")
    seed: int = Field(42, description="Training seed.")
    save_steps: int = Field(25, gt=0, description="Checkpoint every N steps, so an interrupted run resumes.")

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type '{value}'; trl knows: {', '.join(LOSS_TYPES)}")
        return value

    @property
    def learning_rate(self) -> float:
        """Full fine-tuning wants a learning rate about ten times smaller than LoRA."""
        return self.lr if self.lr is not None else (5e-6 if self.full else 5e-5)
