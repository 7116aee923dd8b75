"""Verifications per second of the `math` verifier: serial (in-process) vs VerifierPool.

    python benchmarks/bench_verifiers.py [--cases 10000] [--workers N]

Cases are typical of RL on math word problems, built from the shipped MATH-500 and GSM8K files:
per row, (1) the reference solution against its own gold (long text, answer written like the
gold: mostly the exact-text shortcut), (2) the same solution against the next row's gold (a
wrong answer: a real math-verify comparison), (3) a short completion boxing the gold in another
form (\\dfrac for \\frac, thousands commas, no spaces: math-verify must parse it), (4) a short
completion boxing a wrong number. The list is cycled up to --cases (so, as in GRPO groups, gold
answers repeat and hit each process's gold cache) and shuffled with a fixed seed (in order, the
serial path would profit from math-verify's 20-entry parse cache in a way real batches do not).
Minerva's symbolic answers are left out: they take SymPy seconds each and would measure SymPy,
not the pool.

Wall-clock figures need an otherwise idle machine; CPU seconds (this process and its pool,
from /proc) show the work done whatever else runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import time
from collections import Counter

from rewards import VerifierPool, VerifyRequest
from rewards.pool import PoolConfig
from rlvr.tasks.data import load_rows


def restyle(gold: str) -> str:
    """The same answer written differently (what a model often does)."""
    text = gold.replace("\\frac", "\\dfrac").replace(" ", "")
    if text.isdigit() and len(text) > 3:
        text = f"{int(text):,}"
    return text


def build_cases(count: int) -> list[VerifyRequest]:
    base: list[VerifyRequest] = []
    for name in ("math500", "gsm8k"):
        rows = load_rows(name)
        for i, row in enumerate(rows):
            other = rows[(i + 1) % len(rows)]["answer"]
            wrong = "42" if row["answer"] != "42" else "43"
            base += [
                VerifyRequest("math", row["solution"], row["answer"]),
                VerifyRequest("math", row["solution"], other),
                VerifyRequest(
                    "math",
                    f"Step by step... so the answer is $\\boxed{{{restyle(row['answer'])}}}$.",
                    row["answer"],
                ),
                VerifyRequest("math", f"I think it is \\boxed{{{wrong}}}.", row["answer"]),
            ]
    cases = [base[i % len(base)] for i in range(count)]
    random.Random(0).shuffle(cases)
    return cases


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children and all its live descendants (the pool's
    fork server and workers, with what they reaped), from getrusage and /proc: unlike wall
    time, it does not depend on what else runs."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    parent_of, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent_of[int(entry)] = int(fields[1])
            cpu[int(entry)] = sum(int(x) for x in fields[11:15]) / tick  # u, s, cu, cs
    todo = [child for child, parent in parent_of.items() if parent == os.getpid()]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, parent in parent_of.items() if parent == pid]
    return total


WARM_UP = [VerifyRequest("math", r"\boxed{\frac{1}{2}}", "0.5")] * 8


def run(
    pool: VerifierPool, cases: list[VerifyRequest], warm_up: list[VerifyRequest] = WARM_UP
) -> tuple[float, float, Counter]:
    """(wall seconds, CPU seconds, outcome counts) of one batch of all cases."""
    pool.verify_batch(warm_up)
    cpu, start = cpu_seconds(), time.perf_counter()
    outcomes = pool.verify_batch(cases)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return seconds, cpu, Counter(o.status for o in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cases = build_cases(args.cases)
    print(
        f"{len(cases)} math cases; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    )
    with VerifierPool(PoolConfig(num_workers=0)) as serial:
        serial_s, serial_cpu, serial_counts = run(serial, cases)
    with VerifierPool(PoolConfig(num_workers=args.workers)) as pool:
        pool_s, pool_cpu, pool_counts = run(pool, cases)
        metrics = pool.metrics()
    n = len(cases)
    print(f"{'path':<22}{'wall s':>8}{'verif/s':>9}{'CPU s':>8}{'verif/CPU-s':>13}  outcomes")
    for label, wall, cpu, counts in (
        ("serial (in-process)", serial_s, serial_cpu, serial_counts),
        (f"pool, {args.workers} workers", pool_s, pool_cpu, pool_counts),
    ):
        print(f"{label:<22}{wall:>8.1f}{n / wall:>9.0f}{cpu:>8.1f}{n / cpu:>13.0f}  {dict(counts)}")
    print(
        f"speed-up (wall) {serial_s / pool_s:.2f}x; pool latency p50 "
        f"{metrics['verifier/math/p50_ms']:.1f} ms, p99 {metrics['verifier/math/p99_ms']:.1f} ms;"
        f" load average {os.getloadavg()[0]:.1f} at end"
    )


if __name__ == "__main__":
    main()
