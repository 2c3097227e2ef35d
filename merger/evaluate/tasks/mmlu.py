"""MMLU, 5-shot from each subject's dev items in order; acc averaged over all items (lm-eval `mmlu`)."""

from merger.evaluate.tasks.base import HubSource, Task

LETTERS = ["A", "B", "C", "D"]


class MMLU(Task):
    name = "mmlu"
    title = "MMLU"
    folder = "mmlu"
    default_fewshot = 5
    required = ("id", "subject", "question", "choices", "answer")
    hub = HubSource("cais/mmlu", "all", "test", "dev")
    fewshot_sampler = "first_n"
    metrics = ("acc",)

    def description(self, doc):
        return (
            f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"
        )

    def doc_to_text(self, doc):
        c = doc["choices"]
        return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"

    def doc_to_choice(self, doc):
        return LETTERS

    def shots(self, doc, pool, k):
        """Each subject is its own lm-eval task whose few-shot pool is that subject's dev split."""
        return [d for d in pool if d["subject"] == doc["subject"]][:k]

    def from_hub(self, row, index):
        return {
            "id": f"{row['subject']}-{index}",
            "subject": row["subject"],
            "question": row["question"],
            "choices": list(row["choices"]),
            "answer": int(row["answer"]),
        }
