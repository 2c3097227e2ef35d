"""The sweep journal: one SQLite database (WAL) per sweep folder, the single source of truth for resuming.

A stage is 'running' from its start until its result is committed; a stage found 'running' at start-up was
interrupted (even by SIGKILL) and is redone from clean. Finished stages are never redone. A lock file stops
two sweeps from writing one journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from merger.config.recipe import Candidate
from merger.config.results import CandidateRow, EvalSummary, ItemRow, StageRow, TrialRow
from merger.core.errors import UserError

FILES = ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm")
SIZES = "task_sizes"  # the meta key of the task sizes a halving sweep read when it opened
WORK = ("merges", "loads", "task_builds", "input_bytes_read", "scoring_s", "items_scored", "items_cached")

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY, recipe TEXT NOT NULL, params TEXT NOT NULL, config TEXT NOT NULL, created REAL NOT NULL,
    parent TEXT, stage INTEGER NOT NULL DEFAULT 0, reference TEXT);
CREATE TABLE IF NOT EXISTS stages (
    candidate TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, started REAL, finished REAL,
    seconds REAL, path TEXT, result TEXT, runs INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (candidate, stage));
CREATE TABLE IF NOT EXISTS notes (
    candidate TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (candidate, note));
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY, candidate TEXT NOT NULL, params TEXT NOT NULL, asked INTEGER NOT NULL,
    told INTEGER, state TEXT, value REAL, items INTEGER);
CREATE TABLE IF NOT EXISTS items (
    candidate TEXT NOT NULL, split TEXT NOT NULL, task TEXT NOT NULL, item TEXT NOT NULL, position INTEGER NOT NULL,
    value REAL NOT NULL, record TEXT NOT NULL, signal REAL, PRIMARY KEY (candidate, split, task, item));
CREATE TABLE IF NOT EXISTS work (
    candidate TEXT NOT NULL, stage TEXT NOT NULL, worker TEXT NOT NULL, seconds REAL NOT NULL, merges INTEGER,
    loads INTEGER, task_builds INTEGER, input_bytes_read INTEGER, scoring_s REAL, items_scored INTEGER,
    items_cached INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Journal:
    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / FILES[0]).exists()

    def __init__(self, folder: Path, fresh: bool = False):
        """Open (or create) the journal in `folder`, holding its lock; `fresh` first forgets every result, under
        the lock, so a running sweep's journal is never deleted."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / "sweep.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError.one(str(self.folder), "--out", "another sweep is writing this journal") from None
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        if fresh:
            for name in FILES:
                (self.folder / name).unlink(missing_ok=True)
        self.db = sqlite3.connect(self.folder / "journal.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        if "signal" not in {row[1] for row in self.db.execute("PRAGMA table_info(items)")}:  # written before signals
            self.db.execute("ALTER TABLE items ADD COLUMN signal REAL")
        if "stage" not in {row[1] for row in self.db.execute("PRAGMA table_info(candidates)")}:  # before lineage
            for column in ("parent TEXT", "stage INTEGER NOT NULL DEFAULT 0", "reference TEXT"):
                self.db.execute(f"ALTER TABLE candidates ADD COLUMN {column}")
        if "items_cached" not in {row[1] for row in self.db.execute("PRAGMA table_info(work)")}:  # before the cache
            for column in ("items_scored INTEGER", "items_cached INTEGER"):
                self.db.execute(f"ALTER TABLE work ADD COLUMN {column}")
        self.fallbacks: set[str] = set()  # tasks whose items lack the signal asked for: read by their metric

    def close(self) -> None:
        self.db.close()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    # candidates -------------------------------------------------------------------------------
    def add_candidate(self, c: Candidate) -> None:
        config = {"merge": c.merge, "train": [step.dump() for step in c.train], "random_seed": c.random_seed}
        if c.inputs:
            config["inputs"] = c.inputs
        self.db.execute(
            "INSERT OR IGNORE INTO candidates (id, recipe, params, config, created, parent, stage, reference) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                c.id,
                c.recipe_path,
                json.dumps(c.params),
                json.dumps(config, sort_keys=True),
                time.time(),
                c.parent,
                c.stage,
                c.reference,
            ),
        )
        self.db.executemany("INSERT OR IGNORE INTO notes VALUES (?, ?)", [(c.id, note) for note in c.notes])

    def candidates(self) -> list[CandidateRow]:
        rows = self.db.execute(
            "SELECT id, recipe, params, config, parent, stage, reference FROM candidates ORDER BY created, id"
        ).fetchall()
        notes: dict[str, list[str]] = {}
        for cid, note in self.db.execute("SELECT candidate, note FROM notes ORDER BY rowid"):
            notes.setdefault(cid, []).append(note)
        return [
            CandidateRow(
                id=r[0],
                recipe=r[1],
                params=json.loads(r[2]),
                config=json.loads(r[3]),
                notes=notes.get(r[0], []),
                parent=r[4],
                stage=r[5],
                reference=r[6],
            )
            for r in rows
        ]

    # stages -----------------------------------------------------------------------------------
    def stage(self, cid: str, stage: str) -> StageRow | None:
        row = self.db.execute(
            "SELECT status, started, finished, seconds, path, result, runs FROM stages "
            "WHERE candidate = ? AND stage = ?",
            (cid, stage),
        ).fetchone()
        if row is None:
            return None
        return StageRow(
            candidate=cid,
            stage=stage,
            status=row[0],
            started=row[1],
            finished=row[2],
            seconds=row[3],
            path=row[4],
            result=json.loads(row[5]) if row[5] else None,
            runs=row[6],
        )

    def done(self, cid: str, stage: str) -> bool:
        found = self.stage(cid, stage)
        return found is not None and found.status == "done"

    def start(self, cid: str, stage: str) -> float:
        now = time.time()
        self.db.execute(
            "INSERT INTO stages (candidate, stage, status, started, runs) VALUES (?, ?, 'running', ?, 1) "
            "ON CONFLICT(candidate, stage) DO UPDATE SET status='running', started=?, finished=NULL, "
            "result=NULL, runs=runs+1",
            (cid, stage, now, now),
        )
        return now

    def finish(
        self,
        cid: str,
        stage: str,
        started: float,
        path: str | None = None,
        result: Any = None,
        items: list[ItemRow] | None = None,
    ) -> None:
        """Commit a stage's result and its item records in one transaction: all or nothing."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            for row in items or []:
                self.db.execute(
                    "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        row.split,
                        row.task,
                        row.item,
                        row.position,
                        row.value,
                        row.record.model_dump_json(exclude_none=True),
                        row.signal,
                    ),
                )
            self.db.execute(
                "UPDATE stages SET status='done', finished=?, seconds=?, path=?, result=? "
                "WHERE candidate=? AND stage=?",
                (now, now - started, path, json.dumps(_plain(result)), cid, stage),
            )

    def count_work(self, cid: str, stage: str, worker: str, seconds: float, counters: dict) -> None:
        """What one unit really did (`workspace.Counters`), a row per run of it: the figures benchmarks read."""
        self.db.execute(
            "INSERT INTO work VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, stage, worker, seconds, *(counters.get(k, 0) for k in WORK)),
        )

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def eval_keys(self) -> set[str]:
        """The eval settings' keys of every scoring stage (`eval-<split>-<key>-<offset>-<limit>`)."""
        return {row[0].split("-")[2] for row in self.db.execute("SELECT stage FROM stages WHERE stage LIKE 'eval-%'")}

    def results(self, cid: str, prefix: str) -> list[Any]:
        """Results of a candidate's finished stages whose names start with `prefix`."""
        rows = self.db.execute(
            "SELECT result FROM stages WHERE candidate=? AND status='done' AND stage LIKE ?", (cid, prefix + "%")
        ).fetchall()
        return [json.loads(r[0]) for r in rows if r[0]]

    # search trials ----------------------------------------------------------------------------
    def _next_seq(self) -> int:
        row = self.db.execute("SELECT MAX(MAX(asked), COALESCE(MAX(told), 0)) FROM trials").fetchone()
        return (row[0] or 0) + 1

    def ask_trial(self, number: int, cid: str, params: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO trials (number, candidate, params, asked) VALUES (?, ?, ?, ?)",
            (number, cid, json.dumps(params), self._next_seq()),
        )

    def tell_trial(self, number: int, state: str, value: float, items: int) -> None:
        self.db.execute(
            "UPDATE trials SET told=?, state=?, value=?, items=? WHERE number=?",
            (self._next_seq(), state, value, items, number),
        )

    def trials(self) -> list[TrialRow]:
        rows = self.db.execute(
            "SELECT number, candidate, params, asked, told, state, value, items FROM trials ORDER BY number"
        ).fetchall()
        return [
            TrialRow(
                number=r[0], candidate=r[1], params=json.loads(r[2]), asked=r[3], told=r[4], state=r[5], value=r[6],
                items=r[7],
            )
            for r in rows
        ]  # fmt: skip

    # items ------------------------------------------------------------------------------------
    def item_values(
        self, cid: str, split: str, below: int | None = None, signal: str = "metric"
    ) -> dict[str, dict[str, float]]:
        """{task: {item id: value}} of one candidate on one split, in the seeded order (`below`: each task's first
        items only). `signal`: metric (the headline value), or prob / auto (each item's gold-choice probability; a
        task whose items lack it is read by its metric, with auto, and named in `fallbacks`; refused with prob)."""
        found: dict[str, dict[str, float]] = {}
        signals: dict[str, dict[str, float | None]] = {}
        for task, item, value, prob in self.db.execute(
            "SELECT task, item, value, signal FROM items WHERE candidate=? AND split=? AND position < ? "
            "ORDER BY task, position",
            (cid, split, below if below is not None else 2**62),
        ):
            found.setdefault(task, {})[item] = value
            signals.setdefault(task, {})[item] = prob
        if signal == "metric":
            return found
        for task, probs in signals.items():
            if all(p is not None for p in probs.values()):
                found[task] = probs  # type: ignore[assignment]
            elif signal == "prob":
                raise UserError.one(
                    str(self.folder / "journal.sqlite"),
                    "select.signal",
                    f"prob: task '{task}' has no gold-choice probability (not multiple choice, or scored before "
                    "merger recorded it); use auto or metric",
                )
            else:
                self.fallbacks.add(task)
        return found

    def task_sizes(self) -> dict[str, int]:
        """Task -> the items in its file (the population racing draws from): as journaled when a halving sweep
        opened (its schedule needs them before any item is scored), else from a finished scoring stage."""
        if (known := self.meta(SIZES)) is not None:
            return known
        row = self.db.execute(
            "SELECT result FROM stages WHERE status='done' AND stage LIKE 'eval-select-%' AND result IS NOT NULL"
        ).fetchone()
        tasks = EvalSummary.model_validate(json.loads(row[0])).tasks if row else {}
        return {name: t.n_total for name, t in tasks.items() if t.n_total}

    def items_scored(self, split: str, candidates: list[str]) -> int:
        """Item evaluations recorded on a split for these candidates, over every task."""
        marks = ",".join("?" * len(candidates))
        query = f"SELECT COUNT(*) FROM items WHERE split=? AND candidate IN ({marks})"
        return self.db.execute(query, (split, *candidates)).fetchone()[0]


def _plain(result: Any) -> Any:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
