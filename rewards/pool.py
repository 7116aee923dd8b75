"""Process-isolated verification with hard limits: `VerifierPool`.

Each pool starts one fork server, a fresh interpreter (`python -m rewards.worker`, exec
semantics like multiprocessing's spawn) that loads the verifiers once; workers are forked from
it, so a replacement is ready in milliseconds and never inherits the caller's torch or Ray
state. See rewards/worker.py for the processes and their messages.

Limits, enforced per call:
- wall clock: the pool SIGKILLs a worker whose call runs past `timeout_s` (a C-level loop that
  no signal handler can interrupt stops too), answers that call with an error and forks a
  replacement;
- memory: each worker caps its own address space (RLIMIT_AS = `memory_mb`); a MemoryError is
  an error outcome, after which the worker exits and is replaced;
- crashes (os._exit, segfault, the kernel's OOM killer): the call gets an error outcome naming
  the exit code or signal, and a replacement carries on with the rest of the batch.

Every verifier runs in a worker by default (2 workers). `num_workers=0`, only when asked for,
runs the same API in-process, for debugging: no isolation, no wall-clock limit, no memory cap
(a verifier that hangs hangs the caller; one that calls os._exit ends it).
"""

from __future__ import annotations

import pickle
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from rewards import code_verifier
from rewards.base import CORRECT, ERROR, Outcome, call_verifier, describe
from rewards.forkserver import STARTUP_TIMEOUT_S, ForkServer, WorkerHandle, describe_exit, shut_down
from rewards.registry import _REGISTRY, get_verifier, load_plugin, verifier_names

# A worker holds its running request and one queued behind it, so it never waits for the
# parent between calls (on a busy machine a wake-up can cost as much as a verification). Only
# a message that fits in the pipe buffer is queued: sending it must not block the parent, which
# has deadlines to keep.
PIPELINE_DEPTH = 2
PIPELINE_MAX_BYTES = 32 * 1024
LATENCY_WINDOW = 10_000  # percentiles cover the most recent calls of each verifier


@dataclass(frozen=True)
class VerifyRequest:
    """One verification. `row` holds plain JSON-able values (it is pickled to a worker)."""

    verifier: str
    completion: str
    gold: str
    row: Mapping[str, Any] = field(default_factory=dict)


class _Stats:
    """Per-verifier counters and a window of latencies."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latencies: dict[str, deque] = defaultdict(lambda: deque(maxlen=LATENCY_WINDOW))

    def record(self, name: str, outcome: Outcome, seconds: float, kind: str = "") -> None:
        c = self.counts[name]
        c["calls"] += 1
        c[{CORRECT: "correct", ERROR: "errors"}.get(outcome.status, "incorrect")] += 1
        if kind:
            c[kind] += 1
        self.latencies[name].append(seconds * 1000.0)

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, c in sorted(self.counts.items()):
            for key in ("calls", "correct", "incorrect", "errors", "timeouts", "crashes"):
                out[f"verifier/{name}/{key}"] = float(c[key])
            ms = sorted(self.latencies[name])
            for q in (50, 90, 99):
                out[f"verifier/{name}/p{q}_ms"] = _percentile(ms, q) if ms else 0.0
        return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


class _Batch:
    """One verify_batch call: requests, their outcomes, and the work queues per worker slot.

    Requests with the same gold answer go to the same slot, whose gold cache and math-verify's
    parse cache then hit (a GRPO group shares one gold); a worker with nothing of its own
    takes from the longest queue."""

    def __init__(self, requests: Sequence[VerifyRequest], slots: int, stats: _Stats) -> None:
        self.requests, self.stats = requests, stats
        self.results: list[Outcome | None] = [None] * len(requests)
        self.queues: list[deque[int]] = [deque() for _ in range(slots)]
        for index, r in enumerate(requests):
            self.queues[hash(str(r.gold)) % slots].append(index)

    def pending(self) -> bool:
        return any(self.queues)

    def take(self, slot: int) -> int:
        own = self.queues[slot] if self.queues[slot] else max(self.queues, key=len)
        return own.popleft()

    def give_back(self, slot: int, index: int) -> None:
        self.queues[slot].appendleft(index)

    def finish(self, index: int, outcome: Outcome, seconds: float, kind: str = "") -> None:
        self.results[index] = outcome
        self.stats.record(self.requests[index].verifier, outcome, seconds, kind)


class PoolConfig(BaseModel):
    """The `verifier` section: the verifier pool's processes and limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    num_workers: int = Field(
        2,
        ge=0,
        description="verifier processes; 0 = in the calling process, without timeout, memory "
        "cap or crash recovery (a verifier that hangs or exits takes the run with it)",
    )
    timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="wall-clock limit per verification; past it the outcome is an error",
    )
    memory_mb: Optional[int] = Field(
        2048, ge=64, description="address-space cap per verifier process (None: no cap)"
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="extra verifiers as module:function or name=module:function",
    )
    code: code_verifier.CodeConfig = Field(default_factory=code_verifier.CodeConfig)


class VerifierPool:
    """Verify batches of completions in worker processes with per-call time and memory limits.

    Configured by `PoolConfig`. Its `plugins` are "module:function" or "name=module:function"
    paths, loaded in the parent (so a typo fails here) and in every worker. `verify_batch`
    returns outcomes in request order and never raises for a bad completion; it raises KeyError
    for a verifier name that no built-in, entry point or plug-in provides (a configuration
    error, caught before any work is done).
    One caller at a time: the pool is not thread-safe.
    """

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.num_workers = config.num_workers
        self.timeout_s = config.timeout_s
        self.memory_mb = config.memory_mb
        self._server_config = {
            "memory_mb": config.memory_mb,
            "plugins": list(config.plugins),
            "code": config.code.model_dump(),  # the `code` verifier's settings, for every worker
        }
        for spec in config.plugins:
            load_plugin(spec)
        self._stats = _Stats()
        self._restarts = 0
        self._server_starts = 0  # in a row without a worker becoming ready: a crash loop guard
        self.code_sandbox = ""  # the code sandbox's isolation, once require() has probed it
        self._closed = False
        self._server: list[ForkServer] = []  # lists, so the finalizer needs no ref to self
        self._workers: list[WorkerHandle] = []
        # Runs on close(), on garbage collection and at interpreter exit.
        self._finalizer = weakref.finalize(self, shut_down, self._server, self._workers)
        try:
            if self.num_workers:
                self._start_server()
                self._workers.extend(self._new_worker() for _ in range(self.num_workers))
                self.wait_ready()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every worker and the fork server. Idempotent."""
        self._closed = True
        self._finalizer()

    def metrics(self) -> dict[str, float]:
        """Cumulative counts per verifier (calls, correct, incorrect, errors, timeouts, crashes;
        errors include timeouts and crashes), latency percentiles in ms over the last
        LATENCY_WINDOW calls, and pool counters."""
        out = self._stats.flat()
        out["verifier/pool/workers"] = float(self.num_workers)
        out["verifier/pool/ready"] = float(sum(w.ready for w in self._workers))
        out["verifier/pool/restarts"] = float(self._restarts)
        return out

    def wait_ready(self) -> None:
        """Block until every worker (replacements included) has started; raises RuntimeError if
        one fails to start within STARTUP_TIMEOUT_S. The constructor already calls this."""
        while not all(w.ready for w in self._workers):
            self._collect(None)

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Outcome]:
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        self._check_names(requests)
        if self.num_workers == 0:
            return self._verify_serial(requests)
        batch = _Batch(requests, len(self._workers), self._stats)
        try:
            while batch.pending() or any(w.jobs for w in self._workers):
                for slot, w in enumerate(self._workers):
                    self._feed(slot, w, batch)
                self._collect(batch)
        except BaseException:
            # Interrupted mid-batch: busy workers hold stale work whose answers would be
            # misread by the next batch, so replace them.
            for w in [w for w in self._workers if w.jobs]:
                w.jobs.clear()
                self._replace(w)
            raise
        return batch.results  # type: ignore[return-value]  (every slot is filled by now)

    def _check_names(self, requests: Sequence[VerifyRequest]) -> None:
        self._require_names({r.verifier for r in requests})

    def require(self, names) -> None:
        """Before a run: raise KeyError (listing the valid names) unless every verifier name is
        provided. With `code` among them: ValueError if the pool's limits do not fit its
        sandbox (code_verifier.check_pool) or the sandbox cannot run as configured; the
        isolation it gets is then in `code_sandbox` (code_verifier.check_sandbox)."""
        self._require_names(names)
        if "code" in names and self.num_workers:
            code_verifier.check_pool(self.config)
            self.code_sandbox = code_verifier.check_sandbox(self.config.code)

    def _require_names(self, names) -> None:
        wanted = set(names) - set(_REGISTRY)
        if wanted:
            known = set(verifier_names())
            unknown = sorted(wanted - known)
            if unknown:
                raise KeyError(f"unknown verifier(s) {unknown}; valid: {', '.join(sorted(known))}")

    def _verify_serial(self, requests: Sequence[VerifyRequest]) -> list[Outcome]:
        code_verifier.configure(self.config.code)  # this pool's settings, not another's
        out = []
        for r in requests:
            start = time.perf_counter()
            try:
                verifier = get_verifier(r.verifier)
            except ImportError as e:  # a broken entry point: an error, as in a worker
                outcome = Outcome.error(describe(e))
            else:
                outcome = call_verifier(verifier, r.completion, r.gold, r.row)
            self._stats.record(r.verifier, outcome, time.perf_counter() - start)
            out.append(outcome)
        return out

    def _feed(self, slot: int, w: WorkerHandle, batch: _Batch) -> None:
        """Send `w` requests until it holds PIPELINE_DEPTH of them."""
        while w.ready and len(w.jobs) < PIPELINE_DEPTH and batch.pending():
            index = batch.take(slot)
            r = batch.requests[index]
            try:
                message = pickle.dumps((w.seq + 1, r.verifier, r.completion, r.gold, dict(r.row)))
            except Exception as e:  # e.g. a row holding a lock: this request fails, not the batch
                batch.finish(
                    index, Outcome.error(f"request cannot be sent to a worker: {describe(e)}"), 0.0
                )
                continue
            if w.jobs and len(message) > PIPELINE_MAX_BYTES:
                batch.give_back(slot, index)  # sent when the worker is idle and reading
                return
            try:
                w.requests.send_bytes(message)
            except OSError:  # it died: not this request's fault, so it runs elsewhere
                batch.give_back(slot, index)
                if not w.jobs:  # otherwise the EOF on its results reports the running job
                    self._replace(w)
                return
            w.seq += 1
            if not w.jobs:
                w.head_since = time.monotonic()
            w.jobs.append((index, w.seq))

    def _collect(self, batch: _Batch | None) -> None:
        """Wait for the next answer, readiness or death, or for the nearest deadline."""
        now = time.monotonic()
        deadlines = [w.head_since + self.timeout_s for w in self._workers if w.jobs]
        deadlines += [w.started + STARTUP_TIMEOUT_S for w in self._workers if not w.ready]
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        server = self._server[0]
        watched = [w.results for w in self._workers if w.jobs or not w.ready]
        readable = wait(watched + ([server.sock] if server.alive() else []), timeout)
        for slot, w in enumerate(self._workers):
            if w.results in readable:
                self._receive(slot, w, batch)
        server.read_reports()  # drain exit reports, or the server could block on them
        for slot, w in enumerate(self._workers):
            # Dead, though its pipe may stay open: a process it started can hold the write end
            # until the server has killed it. Its answers already sent are read first.
            while w.jobs and w.pid in server.exits and w.results.poll(0):
                self._receive(slot, w, batch)
            if w.jobs and w.pid in server.exits:
                code = server.exits.pop(w.pid)
                w.pid = None
                self._fail(
                    slot, w, batch, Outcome.error(f"{describe_exit(code)} (crashed)"), "crashes"
                )
        now = time.monotonic()
        for slot, w in enumerate(self._workers):
            if w.jobs and now >= w.head_since + self.timeout_s:
                self._fail(
                    slot, w, batch, Outcome.error(f"timeout after {self.timeout_s:g} s"), "timeouts"
                )
            elif not w.ready and now >= w.started + STARTUP_TIMEOUT_S:
                raise RuntimeError(f"verifier worker did not start within {STARTUP_TIMEOUT_S} s")

    def _receive(self, slot: int, w: WorkerHandle, batch: _Batch | None) -> None:
        try:
            message = w.results.recv()
        except (EOFError, OSError):
            if not w.ready:
                self._lost_at_startup(w)
                return
            code = self._server[0].exit_code(w.pid) if w.pid else None
            w.pid = None  # gone: never signal that pid again
            self._fail(slot, w, batch, Outcome.error(f"{describe_exit(code)} (crashed)"), "crashes")
            return
        if message[0] == "ready":
            w.ready, w.pid = True, message[1]
            self._server[0].exits.pop(w.pid, None)  # a killed predecessor's, if the pid recurs
            self._server_starts = 0
        elif message[0] == "init_error":
            raise RuntimeError(f"verifier worker failed to start: {message[1]}")
        elif w.jobs and message[0] == w.jobs[0][1]:
            _, status, score, reason, exit_after = message
            now = time.monotonic()
            batch.finish(w.jobs.popleft()[0], Outcome(status, score, reason), now - w.head_since)
            w.head_since = now
            if exit_after:  # it answered and exits by itself: what it still holds runs elsewhere
                w.pid = None
                self._fail(slot, w, batch, None, "")

    def _fail(
        self, slot: int, w: WorkerHandle, batch: _Batch | None, outcome: Outcome | None, kind: str
    ) -> None:
        """Replace `w`. Its running job gets `outcome` (unless None); queued ones run elsewhere."""
        if w.jobs and outcome is not None:
            batch.finish(w.jobs.popleft()[0], outcome, time.monotonic() - w.head_since, kind)
        while w.jobs:
            batch.give_back(slot, w.jobs.pop()[0])
        self._replace(w)

    def _lost_at_startup(self, w: WorkerHandle) -> None:
        """A worker's pipe closed before it was ready: the fork server failed or was killed."""
        server = self._server[0]
        server.read_reports()  # raises with the server's own error if it could not start
        if server.alive():
            raise RuntimeError("verifier worker failed to start (see its stderr)")
        self._replace(w)  # the server was killed from outside: start a new one

    def _replace(self, w: WorkerHandle) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = self._new_worker()
        self._restarts += 1

    def _start_server(self) -> None:
        self._server_starts += 1
        if self._server_starts > 3:
            raise RuntimeError("the verifier fork server keeps dying; giving up")
        for old in self._server:
            old.kill()
        self._server[:] = [ForkServer(self._server_config)]

    def _new_worker(self) -> WorkerHandle:
        if not self._server[0].alive():  # killed from outside; its workers died with it
            self._start_server()
        pipes = self._server[0].spawn()
        if pipes is None:
            self._start_server()
            pipes = self._server[0].spawn()
            if pipes is None:
                raise RuntimeError("cannot reach the verifier fork server")
        return WorkerHandle(pipes)
