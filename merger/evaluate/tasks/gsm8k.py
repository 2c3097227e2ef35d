"""GSM8K, 5-shot chain of thought, greedy generation; exact match after lm-eval's strict and flexible extraction."""

import re

from merger.evaluate.tasks.base import FEWSHOT_DELIMITER, TARGET_DELIMITER, Generation, HubSource, Task

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
INVALID = "[invalid]"


def extract(text: str, pattern: re.Pattern, group_select: int) -> str:
    """lm-eval's RegexFilter: the selected match, first non-empty group, stripped; else '[invalid]'."""
    matches = pattern.findall(text)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), INVALID)
    return match.strip()


def normalize(text: str) -> str:
    for pattern in IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


class GSM8K(Task):
    name = "gsm8k"
    title = "GSM8k"
    folder = "gsm8k"
    primary = "exact_match"
    default_fewshot = 5
    required = ("id", "question", "answer")
    hub = HubSource("openai/gsm8k", "main", "test", "train")
    metrics = ("exact_match", "exact_match_flexible")
    until = ["Question:", "</s>", "<|im_end|>"]

    def doc_to_text(self, doc):
        return f"Question: {doc['question']}\nAnswer:"

    def shot_text(self, shot):
        return self.doc_to_text(shot) + TARGET_DELIMITER + shot["answer"] + FEWSHOT_DELIMITER

    def requests(self, doc, shots):
        return Generation(self.context(doc, shots), list(self.until))

    def score_generation(self, doc, text: str) -> dict[str, float]:
        return {
            "exact_match": exact_match(extract(text, STRICT, 0), doc["answer"]),
            "exact_match_flexible": exact_match(extract(text, FLEXIBLE, -1), doc["answer"]),
        }

    def from_hub(self, row, index):
        return {"id": f"gsm8k-{index}", "question": row["question"], "answer": row["answer"]}
