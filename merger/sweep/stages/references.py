"""`select.references`: the first stage's local input models (not named merges, not LoRA pairs), each scored as it is
on the same items, so the leaderboard says whether merging beat its inputs."""

from __future__ import annotations

from merger.config.recipe import Candidate, input_models, reference
from merger.core.hf import is_model_folder


def references(candidates: list[Candidate]) -> list[Candidate]:
    found: dict[str, Candidate] = {}
    for c in [c for c in candidates if c.stage == 0 and not c.reference]:
        made = {named.path for named in c.upstream}
        for ref in input_models(c.merge):
            if "+" not in ref and ref not in made and is_model_folder(ref):
                found.setdefault(ref, reference(ref, c))
    return list(found.values())
