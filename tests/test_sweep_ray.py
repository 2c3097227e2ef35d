"""`merger sweep --executor ray`: the same leaderboard as the local executor; a dead worker's unit is leased again;
a killed driver resumes from the journal. On a local Ray cluster of two one-core workers (this 2-core machine)."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import slerp_recipe, stages, sweep, write

pytest.importorskip("ray")
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster():
    """`ray start --head` with two CPUs: what a user runs on a head node; sweeps join it with --ray-address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = [str(BIN / "ray")]
    subprocess.run(
        [*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env)


def leaderboard(out: Path) -> list[tuple[str, float, int]]:
    return [(r["id"], r["score"], r["n_items"]) for r in json.loads((out / "leaderboard.json").read_text())]


def recipe(tmp_path, tiny_models, **select):
    return write(
        tmp_path / "r.yaml",
        slerp_recipe(
            tiny_models["a"],
            tiny_models["b"],
            4,
            [0.0, 0.25, 0.5, 0.75, 1.0],
            eval={"tasks": ["merger_arithmetic"], "limit": 16},
            select=select,
        ),
    )


def test_ray_gives_the_local_leaderboard(cluster, tiny_models, tmp_path):
    """Halving (the default strategy) with --keep and report items: the same leaderboard, reported scores and kept
    candidates as the local executor, each step done once (grids run on Ray in the tests below)."""
    path = recipe(tmp_path, tiny_models, strategy="halving", budget=0.6, keep=2, report_items=4)
    sweep(path, "--out", tmp_path / "local")
    sweep(path, "--out", tmp_path / "ray", "--executor", "ray", "--ray-address", cluster, "--workers", "2")
    assert leaderboard(tmp_path / "ray") == leaderboard(tmp_path / "local")
    ray_stages = stages(tmp_path / "ray")
    assert all(status == "done" and runs == 1 for status, runs in ray_stages.values())
    assert {k for k in stages(tmp_path / "local")} <= set(ray_stages), "halving may also have promoted early"
    local = json.loads((tmp_path / "local" / "leaderboard.json").read_text())
    remote = json.loads((tmp_path / "ray" / "leaderboard.json").read_text())
    assert [r.get("reported") for r in remote] == [r.get("reported") for r in local]
    kept = sorted(p.name for p in (tmp_path / "ray" / "candidates").iterdir())
    assert kept == sorted(p.name for p in (tmp_path / "local" / "candidates").iterdir())


def _busy_workers() -> list[int]:
    """Ray actor processes in the middle of a unit (Ray titles them `ray::SweepWorker.run` while it runs)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::SweepWorker.run"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _running(out: Path) -> list[tuple[str, str]]:
    try:
        return [k for k, (status, _) in stages(out).items() if status == "running"]
    except sqlite3.Error:
        return []


def _start(path: Path, out: Path, cluster: str) -> subprocess.Popen:
    cmd = [str(BIN / "merger"), "sweep", str(path), "--out", str(out), "--device", "cpu"]
    cmd += ["--executor", "ray", "--ray-address", cluster, "--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())


def test_a_dead_workers_unit_is_redone_elsewhere(cluster, tiny_models, tmp_path):
    path = recipe(tmp_path, tiny_models)
    sweep(path, "--out", tmp_path / "local")
    out = tmp_path / "ray"
    proc = _start(path, out, cluster)
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None and killed is None:
        running, busy = (_running(out) if (out / "journal.sqlite").exists() else []), _busy_workers()
        if running and busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = running
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert killed, "the sweep finished before a worker could be killed"
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "died" in err.decode() and "leased again" in err.decode()
    after = stages(out)
    assert all(status == "done" for status, _ in after.values())
    assert sum(runs for _, runs in after.values()) == len(after) + 1, "one unit was leased twice, no other"
    assert leaderboard(out) == leaderboard(tmp_path / "local")
    db = sqlite3.connect(out / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM items WHERE split='select'").fetchone()[0] == 5 * 16


def test_a_killed_driver_resumes_from_the_journal(cluster, tiny_models, tmp_path):
    path = recipe(tmp_path, tiny_models, strategy="halving", budget=0.6)
    sweep(path, "--out", tmp_path / "local")
    out = tmp_path / "ray"
    proc = _start(path, out, cluster)
    deadline, killed_in = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        if (out / "journal.sqlite").exists():
            found = stages(out) if _running(out) else {}
            if sum(status == "done" for status, _ in found.values()) >= 2:
                proc.send_signal(signal.SIGKILL)
                killed_in = _running(out)
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_in, "the sweep finished before the driver could be killed"
    before = stages(out)
    finished = {k for k, (status, _) in before.items() if status == "done"}
    sweep(path, "--out", out, "--executor", "ray", "--ray-address", cluster, "--workers", "2")
    after = stages(out)
    assert all(after[k] == before[k] for k in finished), "finished stages are not redone"
    assert all(status == "done" for status, _ in after.values())
    assert leaderboard(out) == leaderboard(tmp_path / "local")


def test_refuses_an_output_folder_workers_cannot_see(cluster, tiny_models, tmp_path, monkeypatch):
    from merger.sweep.executors import ray as executor

    monkeypatch.setattr(executor, "SHARED_CHECK", ".not-where-workers-look")
    monkeypatch.setattr(executor.SweepWorker, "sees", lambda self, path, token: False)
    path = recipe(tmp_path, tiny_models)
    from typer.testing import CliRunner

    from merger.cli import app

    result = CliRunner().invoke(
        app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "ray", "--ray-address", cluster]
    )
    assert result.exit_code == 2, result.output + result.stderr
    assert "does not see this folder" in result.stderr and "shared by every node" in result.stderr


def test_unknown_executor_is_one_line(tiny_models, tmp_path):
    from typer.testing import CliRunner

    from merger.cli import app

    path = write(tmp_path / "r.yaml", {**slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.5]), "execute": {}})
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "slurm"])
    assert result.exit_code == 2
    assert "execute.executor: 'slurm' is not an executor; there are: local, ray" in result.stderr
    assert not (tmp_path / "o" / "journal.sqlite").exists(), "no journal for a bad flag"


def test_a_search_runs_trials_in_parallel(cluster, tiny_models, tmp_path):
    from test_search import search_recipe

    path = search_recipe(tiny_models, tmp_path, pruner="none", trials=4)
    out = tmp_path / "ray"
    sweep(path, "--out", out, "--executor", "ray", "--ray-address", cluster, "--workers", "2")
    db = sqlite3.connect(out / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM trials WHERE state = 'complete'").fetchone()[0] == 4
    spans = db.execute("SELECT started, finished FROM stages WHERE stage LIKE 'eval-select-%'").fetchall()
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for b0, b1 in spans[i + 1 :]), (
        "two trials were scored at the same time"
    )


def test_a_worker_lost_at_start_up_is_replaced(cluster, tiny_models, tmp_path, monkeypatch):
    """The first worker dies before it answers the shared-folder check: it is started again, and the sweep ends with
    the local executor's leaderboard."""
    from typer.testing import CliRunner

    from merger.cli import app
    from merger.sweep.executors import ray as executor

    started = []

    def start(self):
        actor = original(self)
        if not started:  # the first worker dies at once, as one killed while its libraries load
            self.ray.kill(actor, no_restart=True)
        started.append(actor)
        return actor

    original = executor.RayExecutor._start
    monkeypatch.setattr(executor.RayExecutor, "_start", start)
    path = recipe(tmp_path, tiny_models)
    sweep(path, "--out", tmp_path / "local")
    args = ["sweep", str(path), "--out", str(tmp_path / "ray"), "--device", "cpu", "--executor", "ray"]
    result = CliRunner().invoke(app, [*args, "--ray-address", cluster, "--workers", "2"])
    assert result.exit_code == 0, result.output + result.stderr
    assert len(started) == 3, "two workers, the dead one started again"
    assert leaderboard(tmp_path / "ray") == leaderboard(tmp_path / "local")


def test_a_cluster_that_cannot_start_is_one_line(tiny_models, tmp_path, monkeypatch):
    import ray
    from typer.testing import CliRunner

    from merger.cli import app

    def timed_out(**kwargs):
        raise RuntimeError("The current node timed out during startup. This could happen because some of the...")

    monkeypatch.setattr(ray, "init", timed_out)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, ["sweep", str(recipe(tmp_path, tiny_models)), "--out", str(out), "--executor", "ray"]
    )
    assert result.exit_code == 2, result.output + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "a local Ray cluster could not be started or reached (The current node timed out" in line
    assert "--executor local" in line and "Traceback" not in result.output + result.stderr
    assert not (out / "candidates").exists()
    db = sqlite3.connect(out / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 0, "nothing journaled"
