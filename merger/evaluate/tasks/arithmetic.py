"""Two-digit arithmetic, generated here: a task that needs no data, so a fresh offline machine scores something."""

import random

from merger.evaluate.tasks.base import Task

OPS = [("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b)]


def generate(seed: int, count: int, prefix: str) -> list[dict]:
    rnd = random.Random(seed)
    docs = []
    for i in range(count):
        a, b = rnd.randint(2, 49), rnd.randint(2, 49)
        word, op = OPS[i % len(OPS)]
        right = op(a, b)
        wrong = set()
        while len(wrong) < 3:
            candidate = right + rnd.choice([-10, -2, -1, 1, 2, 10, a, -b])
            if candidate != right:
                wrong.add(candidate)
        choices = [str(x) for x in [right, *sorted(wrong)]]
        rnd.shuffle(choices)
        docs.append({"id": f"{prefix}-{i}", "question": f"What is {a} {word} {b}?", "choices": choices,
                     "answer": choices.index(str(right))})
    return docs


class Arithmetic(Task):
    name = "arithmetic"
    folder = "arithmetic"
    default_fewshot = 5

    def load(self, root):
        """Local files win when present; otherwise the fixed generated set (500 test items, 50 shots)."""
        if root is not None and (root / self.folder / "test.jsonl").exists():
            return super().load(root)
        return generate(0, 500, "arithmetic"), generate(1, 50, "arithmetic-shot")

    def doc_to_text(self, doc):
        return f"Question: {doc['question']}\nAnswer:"
