"""A merge's license, derived from its inputs': the most restrictive wins, and a non-commercial input makes the
output non-commercial. Unknown licenses are never guessed."""

from __future__ import annotations

PERMISSIVE = {
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc0-1.0",
    "unlicense",
    "openrail",
    "bigscience-openrail-m",
    "creativeml-openrail-m",
    "artistic-2.0",
    "bsl-1.0",
    "isc",
    "zlib",
}
CONDITIONAL = {
    "cc-by-sa-4.0",
    "cc-by-sa-3.0",
    "gpl-3.0",
    "lgpl-3.0",
    "agpl-3.0",
    "openrail++",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "llama4",
    "gemma",
    "bigscience-bloom-rail-1.0",
}


def restrictiveness(license_id: str | None) -> int | None:
    """0 permissive, 1 conditions attached, 2 non-commercial; None when unknown."""
    if not license_id:
        return None
    lid = license_id.lower()
    if "-nc" in lid or "noncommercial" in lid or "non-commercial" in lid:
        return 2
    if lid in CONDITIONAL:
        return 1
    if lid in PERMISSIVE:
        return 0
    return None


def derive_license(inputs: dict[str, str | None]) -> tuple[str, list[str]]:
    """(license of the merge, warnings). Unknown licenses are never guessed: the output says `other`."""
    warnings = []
    unknown = [name for name, lic in inputs.items() if restrictiveness(lic) is None]
    known = {name: lic for name, lic in inputs.items() if restrictiveness(lic) is not None}
    for name in unknown:
        warnings.append(f"license of {name} is unknown ({inputs[name] or 'not stated'}); check it before publishing")
    strictest = max(known.items(), key=lambda kv: restrictiveness(kv[1]), default=(None, None))
    if strictest[1] is not None and restrictiveness(strictest[1]) == 2:
        warnings.append(f"{strictest[0]} is non-commercial ({strictest[1]}), so this model is non-commercial too")
        return strictest[1], warnings
    if unknown or strictest[1] is None:
        return "other", warnings
    return strictest[1], warnings
