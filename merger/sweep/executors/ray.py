"""`ray`: one long-lived worker per GPU (or per `cpus_per_worker` cores where there is none) on a Ray cluster.

Each worker keeps its process, and with it its workspace (`workspace.py`: the input models' tensors, the candidate
last made live, lm-eval's tasks), across candidates. The driver (this process) leases them one step at a time and
alone writes the journal; a step goes to the idle worker that last worked on its candidate, when there is one, so
every rung of a candidate scores the model that worker merged once. A worker that dies is replaced
and its step is reported `Lost`, for the driver to lease again. Workers write candidate folders under the sweep
folder, so the driver checks at start that every worker sees that folder at the same path (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.core.atomic import atomic_write
from merger.core.errors import UserError
from merger.flow.options import RunOptions
from merger.flow.steps import Outcome, Step, perform
from merger.flow.workspace import Workspace
from merger.sweep.executors.base import Finished, Lost

SHARED_CHECK = ".shared-check"
STARTS = 3  # times a worker that dies before its first step is started again


class SweepWorker:
    """A Ray actor: does steps on its own device."""

    def __init__(self, options: RunOptions, threads: int):
        import torch

        torch.set_num_threads(threads)  # its output goes to Ray's log files (log_to_driver=False), not the terminal
        self.workspace = Workspace(options)

    def where(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def sees(self, path: str, token: str) -> bool:
        try:
            return Path(path).read_text() == token
        except OSError:
            return False

    def run(self, step: Step) -> Outcome:
        return perform(step, self.workspace)


class RayExecutor:
    def __init__(self, settings: ExecuteSettings, out: Path, options: RunOptions):
        try:
            import ray
        except ImportError:
            raise UserError.one(
                "merger sweep", "--executor", "ray is not installed; pip install 'merger[ray]'"
            ) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.ray = ray
        try:
            ray.init(
                address=settings.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                ignore_reinit_error=True,
            )
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, TimeoutError, ... for one cause
            where = f"the Ray cluster at {settings.ray_address}" if settings.ray_address else "a local Ray cluster"
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError.one(
                "merger sweep",
                "--ray-address" if settings.ray_address else "--executor",
                f"{where} could not be started or reached ({cause}); check `ray status` on the head node, give "
                "--ray-address of a running cluster, or run with --executor local",
            ) from None
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        use_gpu = gpus > 0 and options.device != "cpu"
        self.slots = settings.workers or (gpus if use_gpu else max(1, cpus // settings.cpus_per_worker))
        fits = gpus if use_gpu else cpus // settings.cpus_per_worker
        if self.slots > fits:
            have = f"{gpus} GPUs" if use_gpu else f"{cpus} CPU cores ({settings.cpus_per_worker} per worker)"
            raise UserError.one(
                "merger sweep", "--workers", f"{self.slots} workers do not fit this Ray cluster's {have}"
            )
        self.actor_class = ray.remote(num_cpus=settings.cpus_per_worker, num_gpus=1 if use_gpu else 0)(SweepWorker)
        self.args = (dataclasses.replace(options, device="cuda" if use_gpu else "cpu"),)
        self.threads = settings.cpus_per_worker
        self.idle = [self._start() for _ in range(self.slots)]
        self.names = {}
        self.running: dict = {}  # object ref -> (step, actor)
        self.holds: dict = {}  # actor -> the candidates it worked on, most recent last (its workspace keeps them live)
        try:
            self._check_shared(out)
        except BaseException:
            self.close()
            raise

    def _start(self):
        return self.actor_class.remote(*self.args, self.threads)

    def _check_shared(self, out: Path) -> None:
        """Every worker must read what the driver wrote in the sweep folder, at the same path. A worker that dies
        before it answers (start-up, model libraries loading) is replaced, up to STARTS times per worker."""
        from ray.exceptions import RayActorError

        token = secrets.token_hex(8)
        probe = Path(out).resolve() / SHARED_CHECK
        atomic_write(probe, token)
        wheres, seen = [], []
        try:
            for index in range(len(self.idle)):
                for _ in range(STARTS):
                    actor = self.idle[index]
                    try:
                        where, sees = self.ray.get([actor.where.remote(), actor.sees.remote(str(probe), token)])
                        break
                    except RayActorError as exc:
                        self.ray.kill(actor, no_restart=True)
                        self.idle[index] = self._start()
                        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                else:
                    raise UserError.one(
                        "merger sweep",
                        "--executor",
                        f"a Ray worker died {STARTS} times while starting, the last time: {why}; check the workers' "
                        "logs (`ray logs`) and free memory on the nodes, or run with --executor local",
                    )
                wheres.append(where)
                seen.append(sees)
        finally:
            probe.unlink(missing_ok=True)
        self.names = {a: w for a, w in zip(self.idle, wheres)}
        blind = [w for w, ok in zip(wheres, seen) if not ok]
        if blind:
            raise UserError.one(
                str(out),
                "--out",
                f"Ray worker {blind[0]} does not see this folder; workers write candidates into it, so it must be on "
                "a filesystem shared by every node, at the same path",
            )

    def _holder(self, cid: str):
        """The worker that worked on `cid` most recently (it may still hold its live model), or None."""
        found = [(list(held).index(cid), a) for a, held in self.holds.items() if cid in held]
        return max(found, key=lambda x: x[0])[1] if found else None

    def prefers(self, step: Step) -> bool:
        """Whether `step` can go to the worker that holds its candidate now (or no worker holds it): the driver
        leases those first, so a candidate's rungs stay where it was merged."""
        holder = self._holder(step.candidate.id)
        return holder is None or holder in self.idle

    def submit(self, step: Step) -> None:
        """To the idle worker that holds this candidate (its live model), else to the idle worker holding the fewest
        candidates."""
        holder = self._holder(step.candidate.id)
        actor = holder if holder in self.idle else min(self.idle, key=lambda a: len(self.holds.get(a, {})))
        self.idle.remove(actor)
        for held in self.holds.values():
            held.pop(step.candidate.id, None)
        self.holds.setdefault(actor, {})[step.candidate.id] = None
        self.running[actor.run.remote(step)] = (step, actor)

    def events(self) -> Iterator[Finished | Lost]:
        from ray.exceptions import RayActorError, RayTaskError

        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        for ref in ready:
            step, actor = self.running.pop(ref)
            name = self.names.get(actor, "worker")
            try:
                outcome = self.ray.get(ref)
            except RayActorError as exc:
                self.ray.kill(actor, no_restart=True)
                replacement = self._start()
                self.names[replacement] = "a replacement worker"
                self.idle.append(replacement)
                yield Lost(step, name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                continue
            except RayTaskError as exc:
                raise exc.cause if isinstance(exc.cause, BaseException) else exc from None
            self.idle.append(actor)
            yield Finished(step, outcome, name)

    def close(self) -> None:
        for actor in [*self.idle, *(a for _, a in self.running.values())]:
            self.ray.kill(actor, no_restart=True)
        self.ray.shutdown()


def make(settings: ExecuteSettings, out: Path, options: RunOptions) -> RayExecutor:
    return RayExecutor(settings, out, options)
