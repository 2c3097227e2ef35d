"""ARC-Challenge, 25-shot on the Open LLM Leaderboard; acc and acc_norm (lm-eval `arc_challenge`)."""

from merger.evaluate.tasks.base import HubSource, Task


class ArcChallenge(Task):
    name = "arc_challenge"
    title = "AI2 Reasoning Challenge"
    folder = "arc_challenge"
    primary = "acc_norm"
    default_fewshot = 25
    hub = HubSource("allenai/ai2_arc", "ARC-Challenge", "test", "train")

    def doc_to_text(self, doc):
        return f"Question: {doc['question']}\nAnswer:"

    def from_hub(self, row, index):
        labels = list(row["choices"]["label"])
        return {
            "id": row["id"],
            "question": row["question"],
            "choices": list(row["choices"]["text"]),
            "choice_labels": labels,
            "answerKey": row["answerKey"],
            "answer": labels.index(row["answerKey"]),
        }
