"""Where work units run: in this process (`InProcessEngine`) or on Ray actors (`RayEngine`).

    with RayEngine(address=None, workers=2) as engine:     # None: start Ray on this machine
        for unit, result in engine.map(units):             # results as units finish, in any order
            ...

`RayEngine` starts `workers` actors (each `threads` CPUs and `gpus` GPUs; each loads a checkpoint
once, ds_core.engine.units.Loaded) and keeps each busy with one unit at a time. An actor that dies
(its process killed, its node lost) is replaced and its unit retried on another, up to
`max_retries` times per unit; a unit that fails for a reason retrying cannot fix (UnitFailed: a
checkpoint missing or different on a worker) stops the job with that message, and so does any
other error raised by a unit (with the worker's traceback's last line).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from ds_core.engine.units import Loaded, UnitFailed, WorkUnit, execute
from ds_core.errors import UserError
from ds_core.paths import REPO_ROOT

ENGINES = ("local", "ray")
ADDRESS_ENV = "DS_LENS_RAY_ADDRESS"
# what a worker must see as the driver does: where models run, where the store is
FORWARDED_ENV = ("DS_LENS_DEVICE", "DS_LENS_DTYPE", "DS_LENS_DATA")


class EngineError(UserError, RuntimeError):
    """A batch job that cannot go on (Ray missing or unreachable, a unit that failed for good)."""


class InProcessEngine:
    """Units one after another in this process: the unit path without Ray (tests, one machine)."""

    name = "in-process"

    def __init__(self, threads: int = 0):
        self.threads = threads
        self.executed: list[WorkUnit] = []  # the units, in the order they ran
        self._loaded = Loaded()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, units: Iterable[WorkUnit]) -> Iterator[tuple[WorkUnit, dict]]:
        import torch

        saved = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            for u in units:
                self.executed.append(u)
                try:
                    yield u, execute(u, self._loaded)
                except UnitFailed as e:
                    raise EngineError(str(e)) from None
        finally:
            torch.set_num_threads(saved)


class _Worker:
    """The Ray actor: one process, its own checkpoints, one unit at a time."""

    def __init__(self, env: dict, threads: int):
        import torch

        os.environ.update(env)
        torch.set_num_threads(max(1, threads))
        self._loaded = Loaded()

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit: dict) -> dict:
        return execute(WorkUnit.from_dict(unit), self._loaded)


def _ray():
    try:
        import ray
    except ImportError:
        raise EngineError("the Ray engine needs the ray package (pip install -r requirements.txt)") from None
    return ray


class RayEngine:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int = 2,
        threads: int = 1,
        gpus: float = 0.0,
        max_retries: int = 2,
        env: dict | None = None,
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
            raise EngineError(f"--workers must be in 1..4096, got {workers!r}")
        if not 1 <= threads <= 1024:
            raise EngineError(f"threads per worker must be in 1..1024, got {threads!r}")
        if not 0 <= gpus <= 64:
            raise EngineError(f"GPUs per worker must be in 0..64, got {gpus!r}")
        self.address = address or None
        self.extra_env = dict(env or {})  # more environment for the workers (e.g. DS_LENS_DEVICE there only)
        self.workers, self.threads, self.gpus, self.max_retries = workers, threads, float(gpus), max_retries
        self.retried: list[str] = []  # digests of units that were run again after their actor died
        self._actors: list = []
        self._started = False

    # --- cluster -------------------------------------------------------------------------------------
    def __enter__(self):
        ray = _ray()
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})
        env.update(self.extra_env)
        if not ray.is_initialized():
            kw = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "include_dashboard": False}
            if self.address is None:  # a cluster of this machine only, sized for the workers
                # Ray runs workers at nice 15 by default: beside any other busy process they starve
                os.environ.setdefault("RAY_worker_niceness", "0")
                kw.update(num_cpus=self.workers * self.threads, num_gpus=int(self.gpus * self.workers + 0.999))
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise EngineError(f"cannot reach the Ray cluster at {self.address}: {e}") from None
            self._started = True
        self._env = env
        self._actor_cls = ray.remote(_Worker)
        return self

    def __exit__(self, *exc):
        ray = _ray()
        for a in self._actors:
            ray.kill(a)
        self._actors = []
        if self._started:
            ray.shutdown()
            self._started = False
        return False

    def _new_actor(self):
        a = self._actor_cls.options(num_cpus=self.threads, num_gpus=self.gpus).remote(self._env, self.threads)
        self._actors.append(a)
        return a

    def actor_pids(self) -> list[int]:
        """The worker processes' ids (the killed-worker test kills one)."""
        ray = _ray()
        return ray.get([a.pid.remote() for a in self._actors])

    def start_actors(self) -> None:
        while len(self._actors) < self.workers:
            self._new_actor()

    # --- running -------------------------------------------------------------------------------------
    def map(self, units: Sequence[WorkUnit]) -> Iterator[tuple[WorkUnit, dict]]:
        ray = _ray()
        from ray.exceptions import RayActorError, RayTaskError

        self.start_actors()
        queue = deque((u, 0) for u in units)
        idle = list(self._actors)
        running: dict = {}  # object ref -> (unit, tries, actor)
        while queue or running:
            while queue and idle:
                u, tries = queue.popleft()
                a = idle.pop()
                running[a.run.remote(u.to_dict())] = (u, tries, a)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            u, tries, a = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as e:  # the actor died (ActorDiedError, ActorUnavailableError)
                if tries >= self.max_retries:
                    raise EngineError(
                        f"{u.kind} unit on {u.checkpoint.path}: its worker died {tries + 1} times ({type(e).__name__})"
                    ) from None
                self._actors.remove(a)
                ray.kill(a)
                idle.append(self._new_actor())
                self.retried.append(u.digest)
                queue.appendleft((u, tries + 1))
                continue
            except RayTaskError as e:
                raise self._failure(u, e) from None
            idle.append(a)
            yield u, result

    @staticmethod
    def _failure(u: WorkUnit, e) -> EngineError:
        cause = getattr(e, "cause", None)
        if isinstance(cause, UnitFailed):
            return EngineError(str(cause))
        last = str(cause or e).strip().splitlines()[-1:] or [type(e).__name__]
        return EngineError(f"{u.kind} unit on {u.checkpoint.path} failed on its worker: {last[0]}")


def make_engine(name: str, address: str | None = None, workers: int = 2, threads: int = 1, gpus: float = 0.0):
    """The engine a command's --engine/--address/--workers ask for; None for 'local' (in-process,
    today's code path). `address`: a running cluster ('auto' for the one `ray start` made here);
    default $DS_LENS_RAY_ADDRESS, else a Ray started on this machine for the job."""
    if name not in ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "local":
        return None
    _ray()
    return RayEngine(address or os.environ.get(ADDRESS_ENV) or None, workers, threads, gpus)


def app_engine():
    """The app's engine for its "compute missing runs" buttons: a context holding a RayEngine on
    the cluster at $DS_LENS_RAY_ADDRESS when that is set (workers: $DS_LENS_RAY_WORKERS, default 2),
    else None (in the app's own process)."""
    from contextlib import nullcontext

    address = os.environ.get(ADDRESS_ENV)
    if not address:
        return nullcontext(None)
    try:
        workers = int(os.environ.get("DS_LENS_RAY_WORKERS", "2"))
    except ValueError:
        raise EngineError(
            f"DS_LENS_RAY_WORKERS must be a whole number, got {os.environ['DS_LENS_RAY_WORKERS']!r}"
        ) from None
    _ray()
    return RayEngine(address, workers)


def where_computed() -> str:
    """Where the app's compute buttons run (app_engine), in words for the page."""
    address = os.environ.get(ADDRESS_ENV)
    if address:
        return f"on the Ray cluster at `{address}` ({ADDRESS_ENV}; progress counts finished work units)"
    return "in this app's process"
