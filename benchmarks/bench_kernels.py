"""Peak memory and time of log-prob + entropy, forward + backward: reference vs chunked (vs triton).

Each (implementation, T) is measured in a fresh subprocess so that no allocator cache, peak
counter or page left resident by another run leaks into the numbers.

Method (CPU): inputs are created in place (no temporaries), one tiny warm-up call loads the
math libraries, then the baseline is the process's current resident set (/proc/self/statm).
The peak is ru_maxrss (the kernel's high-water mark of the resident set) after one
forward + backward of sum(c1 * logp + c2 * entropy); "peak extra" is peak - baseline. It
includes the gradients of hidden and weight that every implementation must produce
(grad_weight alone is V x H x 4 bytes = 0.93 GB at H = 1536, V = 151,936). The high-water mark
before the run is printed as a check that it sat at the baseline. Time is wall-clock of the
same forward + backward (best of --repeats), and CPU time of the process (user + system, all
threads), which is the fairer ratio when other jobs share the cores: the 1-minute load
average at the end of each run is printed beside it. CUDA: peak from torch.cuda.max_memory_allocated
over memory_allocated at the start, after a full-size warm-up call (Triton compiles there).

    python benchmarks/bench_kernels.py                    # T = 1024, 4096, 8192 (many minutes)
    python benchmarks/bench_kernels.py --tokens 1024      # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def _inputs(args, device):
    import torch

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    # In place, so that creating the inputs leaves no temporary above the baseline.
    hidden_TH = torch.empty(args.T, args.hidden, device=device, dtype=dtype).normal_(generator=gen)
    weight_VH = torch.empty(args.vocab, args.hidden, device=device, dtype=dtype).normal_(
        0.0, args.hidden**-0.5, generator=gen
    )
    targets_T = torch.randint(0, args.vocab, (args.T,), device=device, generator=gen)
    coefs_2T = torch.randn(2, args.T, device=device, generator=gen)
    return hidden_TH.requires_grad_(), weight_VH.requires_grad_(), targets_T, coefs_2T


def _step(args, hidden_TH, weight_VH, targets_T, coefs_2T, rows=None):
    import kernels

    rows = slice(None) if rows is None else rows
    logp_T, entropy_T = kernels.logprobs_entropy(
        hidden_TH[rows],
        weight_VH,
        targets_T[rows],
        args.temperature,
        impl=args.impl,
        token_chunk=args.token_chunk,
        vocab_chunk=args.vocab_chunk,
    )
    (coefs_2T[0, rows] @ logp_T + coefs_2T[1, rows] @ entropy_T).backward()


def worker(args) -> dict:
    """One measurement in this process; returns a JSON-able record."""
    import torch

    sys.path.insert(0, str(ROOT))
    device = "cuda" if args.device == "cuda" else "cpu"
    inputs = _inputs(args, device)
    if device == "cuda":
        _step(args, *inputs)
    else:  # small copies: the warm-up's own gradients must not raise the high-water mark
        hidden_TH, weight_VH, targets_T, coefs_2T = inputs
        _step(
            args,
            hidden_TH[:16].detach().requires_grad_(),
            weight_VH[:512].detach().requires_grad_(),
            targets_T[:16] % 512,
            coefs_2T[:, :16],
        )
    for tensor in inputs[:2]:
        tensor.grad = None
    times, cpu_times = [], []
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline, max_before = torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
    else:
        baseline, max_before = _rss_bytes(), _max_rss_bytes()
    for _ in range(args.repeats):
        for tensor in inputs[:2]:
            tensor.grad = None
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        _step(args, *inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu_seconds() - cpu_start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _max_rss_bytes()
    return {
        "impl": args.impl,
        "T": args.T,
        "dtype": args.dtype,
        "device": device,
        "time_s": min(times),
        "cpu_s": min(cpu_times),
        "load": os.getloadavg()[0],
        "peak_extra_gb": (peak - baseline) / GB,
        "baseline_gb": baseline / GB,
        "max_before_gb": max_before / GB,
        "threads": torch.get_num_threads(),
    }


def measure(args, impl: str, tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--tokens", str(tokens)]
    for flag in (
        "hidden",
        "vocab",
        "temperature",
        "dtype",
        "device",
        "repeats",
        "token_chunk",
        "vocab_chunk",
    ):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        if proc.returncode == -9:
            why = ["killed by SIGKILL (the kernel's OOM killer, when memory ran out)"]
        return {"impl": impl, "T": tokens, "error": why[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(records: list[dict], baseline_impl: str) -> None:
    by_key = {(r["impl"], r["T"]): r for r in records}
    print(
        "| T | impl | wall s | CPU s | load | peak extra GB | wall / ref | CPU / ref "
        "| memory / ref |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for record in records:
        if "error" in record:
            print(f"| {record['T']} | {record['impl']} | failed: {record['error']} |||||||")
            continue
        ref = by_key.get((baseline_impl, record["T"]), {})
        ratios = ["", "", ""]
        if "time_s" in ref and record["impl"] != baseline_impl:
            ratios = [f"{record[key] / ref[key]:.2f}" for key in ("time_s", "cpu_s")]
            ratios.append(f"{record['peak_extra_gb'] / ref['peak_extra_gb']:.3f}")
        print(
            f"| {record['T']} | {record['impl']} | {record['time_s']:.1f} | "
            f"{record['cpu_s']:.1f} | {record['load']:.1f} | {record['peak_extra_gb']:.2f} | "
            + " | ".join(ratios)
            + " |"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--impls",
        nargs="+",
        default=None,
        help="default: reference chunked (CPU); reference chunked triton (CUDA)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="default: cuda when available, else cpu",
    )
    parser.add_argument("--dtype", default=None, help="default: float32 (CPU), bfloat16 (CUDA)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--token-chunk", type=int, default=None)
    parser.add_argument("--vocab-chunk", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write records here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.worker:
        args.T = args.tokens[0]
        print(json.dumps(worker(args)))
        return
    impls = args.impls or (
        ["reference", "chunked", "triton"] if args.device == "cuda" else ["reference", "chunked"]
    )
    records = []
    for tokens in args.tokens:
        for impl in impls:
            record = measure(args, impl, tokens)
            records.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)
    sizes = ", ".join(f"{4 * t * args.vocab / GB:.2f} GB at T={t}" for t in args.tokens)
    print(
        f"\nH={args.hidden} V={args.vocab} {args.device} {args.dtype}, forward + backward; "
        f"one [T, V] fp32 tensor is {sizes}; grad_weight is "
        f"{4 * args.vocab * args.hidden / GB:.2f} GB of every peak"
    )
    print_table(records, "reference")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
