"""The files merger writes, as typed models: every reader parses them through these, never by key.

- `merger_candidate.json` is `recipe.Candidate`;
- `merger_train.json` is `TrainHistory` (a `TrainRun` per step), `train_metrics.jsonl` one `TrainLogRecord` a line;
- `merger eval --json` is `EvalSummary` (a `TaskScore` per task), `--items` one `ItemRecord` a line;
- `merger_scores.json` (what a card publishes) is `Scores`;
- `sweep.json` is `SweepMeta`, `leaderboard.json` a list of `LeaderboardRow`;
- the journal's rows are `CandidateRow`, `StageRow` and `ItemRow`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_serializer, model_validator

from merger.config.recipe import EvalSettings, SelectSettings
from merger.config.train import DPOSettings, SFTSettings

# --- training --------------------------------------------------------------------------------------------------
PROVENANCE = ("mergekit_config.yml", "merger_recipe.yaml", "merger_candidate.json")  # what a merge writes of itself
HISTORY = "merger_train.json"  # `TrainHistory`


class TrainData(BaseModel):
    """What was read from the training data and what was kept."""

    source: str = Field(description="The data as given: a file or a hub dataset id.")
    fingerprint: str = Field(description="SHA-256 (16 hex digits) of every row read: identifies the exact data.")
    rows_read: int = Field(description="Rows in the data.")
    rows_used: int = Field(description="Rows trained on.")
    dropped: dict[str, int] = Field(default_factory=dict, description="Rows dropped, by reason.")
    truncated: int = Field(0, description="Rows over max_length left for trl to truncate.")
    contamination_examples: list[dict[str, Any]] = Field(
        default_factory=list, description="Up to 20 contaminated rows: row, task and item matched."
    )


class Decontamination(BaseModel):
    """13-gram overlap between the training rows and the eval tasks' test items."""

    checked: int = Field(0, description="Rows checked.")
    matched: int = Field(0, description="Rows sharing a 13-gram with a test item.")
    dropped: int = Field(0, description="Matched rows dropped (with decontaminate).")
    against: list[str] = Field(default_factory=list, description="Tasks checked against.")
    by_task: dict[str, int] = Field(default_factory=dict, description="Matched rows per task.")


class Perplexity(BaseModel):
    """Held-out perplexity (exp of the mean token cross-entropy) of the model trained, before and after."""

    source: str = Field(description="The held-out text file.")
    texts: int = Field(description="Texts measured.")
    tokens: int = Field(description="Tokens predicted.")
    before: float = Field(description="The input model's perplexity.")
    after: float = Field(description="The trained model's perplexity.")


class TrainRun(BaseModel):
    """One training step of `merger_train.json` (a list, oldest first: a chain's output carries every step)."""

    kind: Literal["pretrain", "sft", "dpo"] = Field(description="Which trainer: continued pretraining, SFT or DPO.")
    base_model: str = Field(description="The folder that was trained (and, for DPO, the reference model).")
    settings: SFTSettings | DPOSettings = Field(description="The settings, defaults filled in.")
    learning_rate: float = Field(description="The learning rate used (settings.lr, or its default).")
    device: str = Field(description="cpu or cuda.")
    steps: int = Field(description="Optimizer steps taken.")
    resumed_from: int | None = Field(None, description="The checkpoint's step an interrupted run resumed from.")
    train_runtime: float | None = Field(None, description="Seconds trl spent training (in its last session).")
    trainable: int = Field(description="Parameters trained (LoRA's adapters, or the model's own with full).")
    layers: list[int] | None = Field(None, description="The decoder layers trained (None: all).")
    teacher: str | None = Field(None, description="Distillation: the teacher model.")
    first_loss: float | None = Field(None, description="The loss at the first logged step.")
    last_loss: float | None = Field(None, description="The loss at the last logged step.")
    data: TrainData = Field(description=TrainData.__doc__)
    decontamination: Decontamination = Field(description=Decontamination.__doc__)
    perplexity: Perplexity | None = Field(None, description=Perplexity.__doc__)


class TrainHistory(RootModel[list[TrainRun]]):
    """`merger_train.json`: every training step a model went through, oldest first."""


class TrainLogRecord(BaseModel):
    """One logging step of `train_metrics.jsonl` (trl's names; a resumed run appends, readers keep the last)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    step: int = Field(description="Optimizer step.")
    loss: float = Field(description="The trainer's loss.")
    learning_rate: float | None = Field(None, description="Learning rate at this step.")
    mean_token_accuracy: float | None = Field(None, description="SFT: share of tokens predicted right.")
    ce: float | None = Field(None, description="Distillation: the cross-entropy term.")
    kl: float | None = Field(None, description="Distillation: the KL term (times temperature squared).")
    accuracies: float | None = Field(None, alias="rewards/accuracies", description="DPO: share of pairs ranked right.")
    margins: float | None = Field(None, alias="rewards/margins", description="DPO: chosen minus rejected reward.")
    chosen: float | None = Field(None, alias="rewards/chosen", description="DPO: reward of the chosen completions.")
    rejected: float | None = Field(None, alias="rewards/rejected", description="DPO: reward of the rejected ones.")
    logps_chosen: float | None = Field(None, alias="logps/chosen", description="DPO: log-probability of chosen.")
    logps_rejected: float | None = Field(None, alias="logps/rejected", description="DPO: log-probability of rejected.")


# --- evaluation ------------------------------------------------------------------------------------------------
_SCORE_FIELDS = (
    "n",
    "n_total",
    "num_fewshot",
    "seconds",
    "cached",
    "primary",
    "dataset",
    "dataset_config",
    "split",
    "title",
    "protocol",
    "chat_template",
    "data",
    "lm_eval",
)


def points(low: float, high: float) -> str:
    """An interval in points, `[-0.4, +3.1]`, never `-0.0`."""
    return "[" + ", ".join(f"{round(x, 1) + 0.0:+.1f}" for x in (low, high)) + "]"


def stderr_key(metric: str) -> str:
    """lm-eval's name for a metric's standard error: `acc,none` -> `acc_stderr,none`."""
    name, _, filt = metric.partition(",")
    return f"{name}_stderr,{filt}" if filt else f"{name}_stderr"


class TaskScore(BaseModel):
    """One task's summary, with lm-eval's metric keys (`acc,none`, `exact_match,strict-match`). Written flat, as
    lm-eval writes a task's results: `{"acc,none": .., "acc_stderr,none": .., "n": .., "num_fewshot": .., ...}`."""

    metrics: dict[str, float] = Field(description="Metric -> its value (lm-eval's aggregation).")
    stderr: dict[str, float] = Field(description="Metric -> its standard error, as lm-eval computes it.")
    primary: str = Field(description="The metric a sweep compares candidates on.")
    n: int = Field(description="Items scored.")
    n_total: int | None = Field(None, description="Items in the split read: n == n_total means the whole split.")
    num_fewshot: int = Field(description="Shots.")
    seconds: float = Field(description="Scoring time.")
    cached: int = Field(0, description="Of the n items, those read from the per-item cache instead of scored.")
    dataset: str | None = Field(None, description="The hub dataset the task's items come from.")
    dataset_config: str | None = Field(None, description="Its configuration, if any.")
    split: str | None = Field(None, description="Its split.")
    title: str | None = Field(None, description="The benchmark's name, for cards.")
    protocol: str | None = Field(None, description="The preset whose protocol (shots, metric) this score follows.")
    chat_template: bool = Field(False, description="Prompts were rendered with the model's chat template.")
    data: str | None = Field(None, description="Where the items were read: 'hub', or the local mirror.")
    lm_eval: str | None = Field(None, description="The lm-eval version whose task ran.")

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        out.update({stderr_key(k): v for k, v in self.stderr.items()})
        out.update(n=self.n, num_fewshot=self.num_fewshot, seconds=round(self.seconds, 3), primary=self.primary)
        out.update({k: getattr(self, k) for k in _SCORE_FIELDS if k not in out and getattr(self, k) is not None})
        return out

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "metrics" in data:
            return data
        fields = {k: data[k] for k in _SCORE_FIELDS if k in data}
        numbers = {k: v for k, v in data.items() if k not in _SCORE_FIELDS}
        errors = {k for k in numbers if "_stderr," in k or k.endswith("_stderr")}
        fields["metrics"] = {k: v for k, v in numbers.items() if k not in errors}
        fields["stderr"] = {m: numbers[stderr_key(m)] for m in fields["metrics"] if stderr_key(m) in numbers}
        return fields


class EvalSummary(BaseModel):
    """`merger eval --json`, and the result of a sweep's eval stage."""

    tasks: dict[str, TaskScore] = Field(default_factory=dict, description="Task -> its scores.")


class ItemRecord(BaseModel):
    """One scored document (`merger eval --items`, the journal's item records), for paired comparisons; from
    lm-eval's logged samples."""

    task: str = Field(description="The task, group or tag it was scored for.")
    id: str = Field(description="Its id: the document index, prefixed by its task within a group (`task/index`).")
    doc_id: int = Field(description="The document's index in its task's split.")
    position: int | None = Field(
        None, description="Its place in the task's seeded item order: the first n positions are a seeded sample."
    )
    primary: str | None = Field(None, description="The task's headline metric (a key of `metrics`).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Every metric, keyed `metric,filter`.")
    lls: list[float] | None = Field(None, description="Log-likelihood of each choice (log-likelihood tasks).")
    gold: list[int] | None = Field(None, description="The gold choices' indices (multiple-choice tasks).")
    signal: float | None = Field(
        None,
        description="The gold choices' probability over the choices, normalized as the headline metric orders them "
        "(multiple-choice tasks with acc, acc_norm or acc_bytes); the continuous selection signal.",
    )
    generation: str | None = Field(None, description="The generated text (generation tasks).")


class EvalReport(EvalSummary):
    """A scoring run: the summary and every item."""

    items: list[ItemRecord] = Field(default_factory=list, description="Every scored item.")

    def summary(self) -> EvalSummary:
        return EvalSummary(tasks=self.tasks)


class TaskResult(BaseModel):
    """One published score."""

    metric: str = Field(description="The task's headline metric.")
    value: float = Field(description="Its mean over the items.")
    stderr: float | None = Field(None, description="Standard error of the mean.")
    n: int = Field(description="Items it was measured on.")
    num_fewshot: int = Field(description="Shots.")
    dataset: str | None = Field(None, description=TaskScore.model_fields["dataset"].description)
    dataset_config: str | None = Field(None, description=TaskScore.model_fields["dataset_config"].description)
    split: str | None = Field(None, description=TaskScore.model_fields["split"].description)
    title: str | None = Field(None, description=TaskScore.model_fields["title"].description)
    n_total: int | None = Field(None, description=TaskScore.model_fields["n_total"].description)
    protocol: str | None = Field(None, description=TaskScore.model_fields["protocol"].description)
    data: str | None = Field(None, description=TaskScore.model_fields["data"].description)

    @classmethod
    def of(cls, score: TaskScore, value: float, stderr: float | None, n: int) -> TaskResult:
        """A published score: the task's facts from its eval summary, the value from the items it is measured on."""
        facts = {k: getattr(score, k) for k in ("num_fewshot", "dataset", "dataset_config", "split", "title", "data")}
        return cls(
            metric=score.primary,
            value=value,
            stderr=stderr,
            n=n,
            n_total=score.n_total,
            protocol=score.protocol,
            **facts,
        )


class Scores(BaseModel):
    """`merger_scores.json`: the scores a card publishes, and which items they were measured on."""

    tasks: dict[str, TaskResult] = Field(description="Task -> its published score.")
    items: Literal["report", "select", "eval"] = Field(
        description="report: items disjoint from those the model was "
        "selected on; select: the items it was chosen on; eval: a "
        "`merger eval` run that chose nothing."
    )
    sweep: str | None = Field(None, description="The sweep folder the scores come from.")
    candidate: str | None = Field(None, description="The candidate id in that sweep.")
    source: str | None = Field(None, description="The `merger eval --json` file the scores come from.")

    @classmethod
    def from_eval(cls, summary: EvalSummary, source: str) -> Scores:
        return cls(
            items="eval",
            source=source,
            tasks={
                name: TaskResult.of(t, t.metrics[t.primary], t.stderr.get(t.primary), t.n)
                for name, t in summary.tasks.items()
            },
        )


# --- sweeps ----------------------------------------------------------------------------------------------------
class SweepCandidate(BaseModel):
    recipe: str = Field(description="The recipe file.")
    params: dict[str, Any] = Field(description="The sweep point.")
    parent: str | None = Field(None, description="A refined child's parent.")
    stage: int = Field(0, description="0 for the sweep's own candidates; k for a child of refine stage k.")
    reference: str | None = Field(None, description="A reference row: the input model scored as it is.")
    inputs: list[str] = Field(default_factory=list, description="A merged child's inputs (earlier candidates).")


class SweepMeta(BaseModel):
    """`sweep.json`: how the sweep scored and selected, and its candidates."""

    metric: str = Field(description="The selection metric.")
    eval: EvalSettings = Field(description="What every candidate was scored on.")
    select: SelectSettings = Field(description="How the winner was chosen.")
    candidates: dict[str, SweepCandidate] = Field(description="Candidate id -> where it came from.")
    search: SearchSummary | None = Field(None, description="The search, when the sweep was one.")
    counted: dict[str, int | None] = Field(
        default_factory=dict,
        description="Candidate id -> how many leading selection items of each task its rank counts (racing and "
        "halving: up to the slice it was decided into; none given: all).",
    )
    decision: Decision | None = Field(None, description="How the selection ended.")


class Decision(BaseModel):
    """How a sweep's selection ended, in the deciding signal: the leaderboard's decision line."""

    winner: str = Field(description="The candidate kept as best.")
    rule: str = Field("grid", description="What picked it: grid, halving, a race (+ race), or search.")
    signal: str = Field(description="What decided: metric, or prob (the gold choice's probability).")
    fallback: list[str] = Field(default_factory=list, description="Tasks read by their metric for lack of the signal.")
    settled: bool = Field(description="The winner is within delta of every candidate still in the race, at confidence.")
    delta: float = Field(description="The indifference zone, in points of the deciding signal.")
    confidence: float = Field(description="Confidence of the race's claims, over all comparisons and looks together.")
    finalists: list[str] = Field(description="Candidates scored on the most items (the race's last look).")
    within: list[str] = Field(description="Finalists not shown worse than the winner (the winner included).")
    items_scored: int = Field(description="Selection item evaluations made (every candidate and task).")
    budget: int | None = Field(None, description="Every candidate on every selection item of every task.")
    runner_up: str | None = Field(None, description="The second in the ranking.")
    paired: list[float] | None = Field(
        None,
        description="The winner's signal minus the runner-up's, in points: a paired bootstrap interval at confidence "
        "on the items both were scored on (fixed before any was scored; not an anytime sequence).",
    )
    paired_items: int | None = Field(None, description="Items per candidate, over every task, that interval is on.")

    def line(self) -> str:
        """One line: what was decided, by what rule, how sure, at what cost."""
        how = f"by {self.signal}" + (f" ({', '.join(self.fallback)} by metric)" if self.fallback else "")
        spent = f"{self.items_scored:,} item evaluations" + (
            f", {self.items_scored / self.budget:.0%} of every candidate on every item" if self.budget else ""
        )
        sure = f"{self.confidence:.0%} confidence"
        pair = (
            f"; ahead of {self.runner_up} by {points(*self.paired)} points (paired "
            f"{self.confidence:.0%} interval on {self.paired_items} items)"
            if self.runner_up and self.paired
            else ""
        )
        if "race" not in self.rule or len(self.finalists) == 1:
            return f"best {self.winner} by {self.rule} ({how}, {spent}){pair}"
        if self.settled and len(self.within) <= 1:
            return f"best {self.winner}: every other candidate shown worse at {sure}, anytime-valid ({how}, {spent})"
        if self.settled:
            return (
                f"best {self.winner}: within {self.delta:g} point{'s' * (self.delta != 1)} of every other candidate "
                f"at {sure}, anytime-valid ({how}, {spent}){pair}"
            )
        return (
            f"race undecided at the budget: {len(self.within)} candidates not shown worse (anytime-valid, {sure}); "
            f"best by score {self.winner} ({how}, {spent}){pair}"
        )


class Reported(BaseModel):
    tasks: dict[str, float] = Field(description="Task -> mean on the report items.")
    n_items: int = Field(description="Report items scored.")
    note: str = Field(
        "scored on items disjoint from those used to select this candidate", description="What these items are."
    )


class LeaderboardRow(BaseModel):
    """One candidate in `leaderboard.json`, best first."""

    id: str = Field(description="Candidate id.")
    recipe: str = Field(description="Its recipe file.")
    params: dict[str, Any] = Field(description="Its sweep point.")
    train: list[str] = Field(default_factory=list, description="The training steps after its merge, in order.")
    stage: int = Field(0, description="0 for the sweep's own candidates; k for a child of refine stage k.")
    parent: str | None = Field(
        None, description="A refined child's parent (the candidate it trained further, or a merged child's best input)."
    )
    inputs: list[str] = Field(default_factory=list, description="A merged child's inputs (earlier candidates), by id.")
    vs_parent: tuple[float, float] | None = Field(
        None,
        description="A child's anytime-valid bounds on its signal score minus its parent's, on the items both have, "
        "at select.confidence (shared by the children's comparisons).",
    )
    beats_parent: bool | None = Field(
        None, description="A child shown better than its parent (lower bound above 0); one that is not is never kept."
    )
    reference: str | None = Field(
        None, description="A reference row (select.references): this input model, scored as it is; never kept."
    )
    score: float = Field(description="The headline metric on the selection items (mean over tasks, or one task's).")
    ci: tuple[float, float] = Field(description="Bootstrap 95% confidence interval of the score.")
    signal: float | None = Field(None, description="The deciding signal's score (the metric's, or the mean p_gold).")
    gap: tuple[float, float] | None = Field(
        None,
        description="Anytime-valid bounds on this candidate's signal score minus the best's, on the items both have, "
        "at select.confidence (shared by the best's comparisons with the others).",
    )
    tied_with_best: bool = Field(
        description="Not shown worse than the best (its gap's upper bound is not below 0), on as many items (one "
        "cut at an earlier rung is not tied)."
    )
    tasks: dict[str, float] = Field(description="Task -> mean on the selection items.")
    n_items: int = Field(description="Selection items scored.")
    reported: Reported | None = Field(None, description="The winner's score on disjoint report items.")


class Weights(BaseModel):
    """A candidate's weights as the journal records them: the digest of those scored (stage `scored-weights`), or of
    those saved and whether they were checked against the scored ones (stage `save`)."""

    digest: str | None = Field(None, description="tensor digest (core.digest.tensor_digest); None: scored from disk.")
    checked_against_scored: bool = Field(False, description="save: the saved weights' digest equals the scored one.")


class CandidateRow(BaseModel):
    """The journal's record of a candidate."""

    id: str = Field(description="Candidate id.")
    recipe: str = Field(description="Its recipe file.")
    params: dict[str, Any] = Field(description="Its sweep point.")
    config: dict[str, Any] = Field(description="The resolved merge, its training steps, and the merge's seed.")
    notes: list[str] = Field(default_factory=list, description="What validation noted about it.")
    parent: str | None = Field(None, description="A refined child's parent.")
    stage: int = Field(0, description="0 for the sweep's own candidates; k for a child of refine stage k.")
    reference: str | None = Field(None, description="A reference row: the input model scored as it is.")
    inputs: list[str] = Field(default_factory=list, description="A merged child's inputs (earlier candidates).")


class StageRow(BaseModel):
    """The journal's record of one stage of one candidate."""

    candidate: str = Field(description="Candidate id.")
    stage: str = Field(description="merge, train-<n>-<kind>, save, or eval-<split>-<settings>-<offset>-<limit>.")
    status: Literal["running", "done"] = Field(description="'running' from start until committed.")
    started: float | None = Field(None, description="Unix time of the last start.")
    finished: float | None = Field(None, description="Unix time it finished.")
    seconds: float | None = Field(None, description="How long the last run took.")
    path: str | None = Field(None, description="What it wrote, if anything.")
    result: Any = Field(None, description="What it returned (an EvalSummary, a TrainRun, ...).")
    runs: int = Field(0, description="Times it was started: more than 1 means it was redone.")


class TrialRow(BaseModel):
    """The journal's record of one search trial, in the order the sampler saw it."""

    number: int = Field(description="Optuna's trial number: 0, 1, ... in the order proposed.")
    candidate: str = Field(description="The candidate its point resolved to (several trials may share one).")
    params: dict[str, Any] = Field(description="Its point: searched path -> value.")
    asked: int = Field(description="When it was proposed, in the journal's sequence of asks and tells.")
    told: int | None = Field(None, description="When its outcome was told to the sampler; None while it runs.")
    state: Literal["complete", "pruned"] | None = Field(None, description="complete, or pruned (stopped early).")
    value: float | None = Field(None, description="Its score on the items it was scored on.")
    items: int | None = Field(None, description="Items per task it was scored on before it was told.")


class SearchSummary(BaseModel):
    """What a search did, for the leaderboard."""

    sampler: str = Field(description="tpe, cmaes or random.")
    trials: int = Field(description="Trials proposed.")
    candidates: int = Field(description="Distinct candidates they resolved to.")
    pruned: int = Field(description="Trials stopped early by racing.")
    items_scored: int = Field(description="Selection items scored over all trials (items x tasks).")
    items_saved: int = Field(description="Selection items racing did not need to score.")
    order: list[str] = Field(description="Candidate ids in trial order (a repeat is a trial that hit a known point).")
    values: list[float] = Field(description="Each trial's score on the items it was scored on.")
    complete: list[bool] = Field(description="Whether each trial ran on every selection item.")


class ItemRow(BaseModel):
    """The journal's record of one scored item."""

    split: str = Field(description="select or report.")
    task: str = Field(description="Task name.")
    item: str = Field(description="Item id.")
    position: int = Field(description="Its place in its task's seeded item order (0 is the first item).")
    value: float = Field(description="Its headline metric.")
    signal: float | None = Field(None, description=ItemRecord.model_fields["signal"].description)
    record: ItemRecord = Field(description="Everything measured on it.")


# --- publication -----------------------------------------------------------------------------------------------
class EvalResultDataset(BaseModel):
    id: str = Field(description="The benchmark's hub dataset id.")
    task_id: str = Field(description="The task scored on it (lm-eval's task name).")


class EvalResultSource(BaseModel):
    name: str = Field(description="Who measured it.")
    url: str | None = Field(None, description="Where the measurement can be seen.")


class EvalResult(BaseModel):
    """One entry of a Hugging Face Eval Results file (`.eval_results/<benchmark>.yaml` in a model repo)."""

    dataset: EvalResultDataset = Field(description=EvalResultDataset.__doc__)
    value: float = Field(description="The score, in percent.")
    date: str = Field(description="When it was measured (YYYY-MM-DD).")
    source: EvalResultSource = Field(description=EvalResultSource.__doc__)
    notes: str | None = Field(None, description="How it was measured, where that differs from the default.")
