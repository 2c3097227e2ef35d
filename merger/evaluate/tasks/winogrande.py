"""Winogrande with partial scoring: each option fills the blank in the context, the rest of the sentence is scored."""

from merger.evaluate.tasks.base import FEWSHOT_DELIMITER, TARGET_DELIMITER, HubSource, Requests, Task


class Winogrande(Task):
    name = "winogrande"
    title = "Winogrande"
    folder = "winogrande"
    default_fewshot = 5  # used only where a few-shot pool exists
    required = ("id", "sentence", "option1", "option2", "answer")
    draws_extra_shot = True
    hub = HubSource("allenai/winogrande", "winogrande_xl", "validation", "train")
    metrics = ("acc",)

    def partial_contexts(self, doc):
        idx = doc["sentence"].index("_")
        return [doc["sentence"][:idx] + doc["option1"], doc["sentence"][:idx] + doc["option2"]]

    def target(self, doc):
        idx = doc["sentence"].index("_") + 1
        return doc["sentence"][idx:].strip()

    def doc_to_choice(self, doc):
        return self.partial_contexts(doc)

    def shot_text(self, shot):
        return self.partial_contexts(shot)[self.gold(shot)] + TARGET_DELIMITER + self.target(shot) + FEWSHOT_DELIMITER

    def requests(self, doc, shots):
        prefix = "".join(self.shot_text(s) for s in shots)
        continuation = TARGET_DELIMITER + self.target(doc)
        return Requests([(prefix + ctx, continuation) for ctx in self.partial_contexts(doc)])

    def from_hub(self, row, index):
        answer = {"1": 0, "2": 1}.get(row["answer"], 0)
        return {
            "id": f"winogrande-{index}",
            "sentence": row["sentence"],
            "option1": row["option1"],
            "option2": row["option2"],
            "answer": answer,
        }
