"""HellaSwag, 10-shot on the Open LLM Leaderboard; acc_norm is the headline (lm-eval `hellaswag`)."""

import re

from merger.evaluate.tasks.base import HubSource, Task


def preprocess(text: str) -> str:
    """lm-eval's cleanup of WikiHow markup, verbatim."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


class HellaSwag(Task):
    name = "hellaswag"
    title = "HellaSwag"
    folder = "hellaswag"
    primary = "acc_norm"
    default_fewshot = 10
    draws_extra_shot = True
    hub = HubSource("Rowan/hellaswag", None, "validation", "train")

    def doc_to_text(self, doc):
        return doc["question"]

    def from_hub(self, row, index):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        return {
            "id": f"hellaswag-{index}",
            "question": preprocess(row["activity_label"] + ": " + ctx),
            "choices": [preprocess(e) for e in row["endings"]],
            "answer": int(row["label"] or 0),
        }
