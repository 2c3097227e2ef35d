"""Quiet by default: merger's own progress and tables are the only output; what the libraries say goes to a log.

transformers, datasets, trl, peft, accelerate and mergekit print deprecation warnings, log lines and progress bars
of their own on every stage. Unless `--verbose` is given, all of it is written to a log file instead (nothing is
lost), with Python warnings routed through logging so they land there too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

LIBRARIES = (
    "transformers",
    "datasets",
    "huggingface_hub",
    "trl",
    "peft",
    "accelerate",
    "mergekit",
    "lm_eval",
    "torch",
    "py.warnings",
)


_TQDM_INIT: list = []  # tqdm's own __init__ while bars are off


def _progress_bars(enabled: bool) -> None:
    """The libraries' own tqdm bars (weights loading, dataset maps, downloads)."""
    import datasets
    import huggingface_hub.utils
    import tqdm.std
    import transformers.utils.logging as hf_logging

    # Plain tqdm bars (lm-eval's request loops): tqdm reads TQDM_DISABLE once, when it is imported, so the bars
    # of this process are turned off by default here (a bar that asks to be shown still is), and child processes
    # read the variable.
    if enabled:
        os.environ.pop("TQDM_DISABLE", None)
        tqdm.std.tqdm.__init__ = _TQDM_INIT.pop() if _TQDM_INIT else tqdm.std.tqdm.__init__
    else:
        os.environ["TQDM_DISABLE"] = "1"
        if not _TQDM_INIT:
            _TQDM_INIT.append(vars(tqdm.std.tqdm)["__init__"])
            tqdm.std.tqdm.__init__ = functools.partialmethod(tqdm.std.tqdm.__init__, disable=True)
    if enabled:
        hf_logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()


@contextlib.contextmanager
def library_output(log_file: Path | None, verbose: bool = False) -> Iterator[None]:
    """Send library logs, warnings and progress bars to `log_file` (appended) for the duration; `verbose` or no
    file: leave them on the terminal."""
    if verbose or log_file is None:
        yield
        return
    import datasets.utils.logging as ds_logging
    import transformers.utils.logging as hf_logging

    hf_logging.get_verbosity(), ds_logging.get_verbosity()  # both add their stderr handler on first use: now
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {name: (logging.getLogger(name).propagate, list(logging.getLogger(name).handlers)) for name in LIBRARIES}
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    for name in LIBRARIES:  # their own stderr handlers off; everything reaches the root, and so the file
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)
    _progress_bars(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        _progress_bars(True)
        logging.captureWarnings(False)
        for name, (propagate, handlers) in saved.items():
            logging.getLogger(name).propagate = propagate
            logging.getLogger(name).handlers = handlers
        root.handlers, level = saved_root
        root.setLevel(level)
        handler.close()
