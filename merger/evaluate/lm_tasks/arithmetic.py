"""The demo task's items: 500 test and 50 few-shot questions, the same on every machine."""

import random

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
        docs.append(
            {
                "id": f"{prefix}-{i}",
                "question": f"What is {a} {word} {b}?",
                "choices": choices,
                "answer": choices.index(str(right)),
            }
        )
    return docs


def dataset(**_metadata):
    import datasets

    return datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_list(generate(0, 500, "arithmetic")),
            "train": datasets.Dataset.from_list(generate(1, 50, "arithmetic-shot")),
        }
    )
