"""Programs per second of the `code` verifier: serial (in-process) vs VerifierPool, with and
without namespaces.

    python benchmarks/bench_code.py [--repeat 1] [--workers N]

The programs are HumanEval's: each canonical solution against its own tests (164 correct) and
against the next problem's (164 incorrect), shuffled with a fixed seed, --repeat times over.
Each program is one sandbox: fork, namespaces (or a process group), a fresh `python -I -S`
running the harness, the tests, the clean-up. CPU seconds count this process and every
descendant, reaped ones included (their time is charged to the parent that waited for them):
unlike wall time, that does not depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random

from bench_verifiers import run  # same batch timing and CPU accounting as the math benchmark

from rewards import VerifierPool, VerifyRequest, sandbox
from rewards.code_verifier import CodeConfig
from rewards.pool import PoolConfig
from rlvr.tasks.data import load_rows


def build_cases(repeat: int) -> list[VerifyRequest]:
    rows = load_rows("humaneval")
    cases = []
    for i, row in enumerate(rows):
        extra = {k: v for k, v in row.items() if k not in ("prompt", "answer")}
        for program in (row["answer"], rows[(i + 1) % len(rows)]["answer"]):
            cases.append(VerifyRequest("code", f"```python\n{program}\n```", "", extra))
    cases *= repeat
    random.Random(0).shuffle(cases)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cases = build_cases(args.repeat)
    n = len(cases)
    print(
        f"{n} HumanEval programs; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"{'path':<26}{'wall s':>8}{'prog/s':>8}{'CPU s':>8}{'prog/CPU-s':>12}  outcomes")
    for namespaces in (True, False):
        code = CodeConfig(timeout_s=10.0, namespaces=namespaces)
        print(f"isolation: {sandbox.probe(namespaces).describe()}")
        for label, workers in (
            ("serial (in-process)", 0),
            (f"pool, {args.workers} workers", args.workers),
        ):
            config = PoolConfig(num_workers=workers, timeout_s=20.0, code=code)
            with VerifierPool(config) as pool:
                wall, cpu, counts = run(pool, cases, warm_up=cases[:4])  # probes the sandbox
            rates = f"{wall:>8.1f}{n / wall:>8.1f}{cpu:>8.1f}{n / cpu:>12.1f}"
            print(f"  {label:<24}{rates}  {dict(counts)}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
