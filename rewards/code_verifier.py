"""The `code` verifier: run the program a completion writes against the row's tests, sandboxed.

Row fields (rlvr/tasks/data.py builds them for the shipped HumanEval set):
- assert tests: `tests` (a list of Python snippets, each one test, scored apart; or one
  string), optional `test_setup` (run once before them), `entry_point` (the function the tests
  call as `candidate`), `code_prefix` (prepended to the program, e.g. HumanEval's prompt with
  its imports and helper functions);
- or stdin/stdout tests: `inputs` and `outputs` (lists of strings, one per case): each case
  runs the program with the input on stdin; its stdout must equal the output, up to trailing
  spaces and blank lines, and it must exit with status 0.

The program is the completion's last fenced code block (```python ... ```; an unterminated
last fence counts, as when generation stopped inside it), or with `extract: entry_point` the
last block that defines the entry point. Outcomes keep their meaning: correct when every test
passes; incorrect when a test fails, the program does not compile, raises, exits early, overruns
`timeout_s` or kills its harness (all of it the program's doing: no escape into "error", which
the advantages would skip); error only when the sandbox itself fails or its harness does not
start within `start_timeout_s` (and for malformed rows). With `partial_credit` an incorrect
outcome scores the fraction of tests passed.

How the sandbox works and what it contains: rewards/sandbox.py and docs/verifiers.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rewards import sandbox
from rewards.base import Outcome
from rewards.registry import register

# The pool's per-call clock must cover the harness start, the program and the clean-up.
POOL_MARGIN_S = sandbox.CLEANUP_S + 1.0
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGUAGES = ("", "python", "py", "python3", "py3")


class CodeConfig(BaseModel):
    """`verifier.code`: the `code` verifier's sandbox. Per program (one completion and all of
    its tests)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timeout_s: float = Field(
        3.0,
        gt=0.0,
        description="wall clock for the program and its tests, from the harness start; past it "
        "the outcome is incorrect (time limit exceeded)",
    )
    start_timeout_s: float = Field(
        5.0,
        gt=0.0,
        description="wall clock for the sandbox to start the harness (interpreter start-up); "
        "past it the outcome is an error",
    )
    memory_mb: int = Field(1024, ge=64, description="address-space cap (RLIMIT_AS) per process")
    max_processes: int = Field(
        32, ge=1, description="processes and threads the program may have (RLIMIT_NPROC)"
    )
    file_mb: int = Field(
        16, ge=1, description="largest file (RLIMIT_FSIZE); the scratch tmpfs holds twice this"
    )
    max_open_files: int = Field(64, ge=16, description="open file descriptors (RLIMIT_NOFILE)")
    partial_credit: bool = Field(
        False, description="an incorrect program scores the fraction of its tests that passed"
    )
    extract: Literal["last_block", "entry_point"] = Field(
        "last_block",
        description="the program: the last fenced code block, or the last block that defines "
        "the row's entry_point",
    )
    namespaces: bool = Field(
        True, description="isolate with Linux namespaces where the kernel allows it"
    )
    require_namespaces: bool = Field(
        False, description="error (do not run) where namespaces are unavailable"
    )
    python: str = Field(
        "",
        description="interpreter for the programs (default: this one if the sandbox's user can "
        "run it, else /usr/bin/python3)",
    )

    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(
            timeout_s=self.timeout_s,
            start_timeout_s=self.start_timeout_s,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
            file_mb=self.file_mb,
            max_open_files=self.max_open_files,
            namespaces=self.namespaces,
            python=self.python,
        )

    def pool_timeout_needed(self) -> float:
        """The least `verifier.timeout_s` under which a slow program is still judged here
        (incorrect) rather than cut off by the pool (an error)."""
        return self.start_timeout_s + self.timeout_s + POOL_MARGIN_S


_CONFIG = CodeConfig()


def check_pool(pool) -> None:
    """Raise ValueError (one line) if the pool's limits (a PoolConfig) do not fit the `code`
    verifier: its per-call clock must cover the sandbox's clocks and clean-up (else a slow
    program becomes an error, not a wrong answer), and its workers' address-space cap must
    leave room for the sandbox's (an unprivileged process cannot raise it for its children)."""
    need = pool.code.pool_timeout_needed()
    if pool.timeout_s < need:
        raise ValueError(
            f"verifier.timeout_s={pool.timeout_s:g} is too small for the code verifier: it needs "
            f"at least verifier.code.start_timeout_s + verifier.code.timeout_s + "
            f"{POOL_MARGIN_S:g} = {need:g} s"
        )
    if pool.memory_mb is not None and pool.code.memory_mb > pool.memory_mb:
        raise ValueError(
            f"verifier.code.memory_mb={pool.code.memory_mb} exceeds verifier.memory_mb="
            f"{pool.memory_mb}: code runs are started from a worker capped at that"
        )


def check_sandbox(config: CodeConfig) -> str:
    """The isolation this machine gives the sandbox, probed in a fresh interpreter (the caller
    may hold threads, which a fork with namespaces must not inherit), as one line; ValueError
    if `require_namespaces` is set and the kernel refuses them, or no interpreter is usable."""
    code = (
        "import sys; from rewards.sandbox import probe; "
        "i = probe(sys.argv[1] == '1', sys.argv[2]); print(int(i.namespaces), i.describe())"
    )
    flag = "1" if config.namespaces else "0"
    done = subprocess.run(
        [sys.executable, "-c", code, flag, config.python],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)},
    )
    if done.returncode != 0:
        raise ValueError(f"code sandbox probe failed: {done.stderr.strip()[-300:]}")
    namespaces, _, line = done.stdout.strip().partition(" ")
    if config.require_namespaces and namespaces != "1":
        raise ValueError(f"verifier.code.require_namespaces=true, but the sandbox has {line}")
    if line.endswith("python not found"):
        raise ValueError(f"code sandbox: no Python interpreter its user can run ({line})")
    return line


def configure(config: CodeConfig) -> None:
    """Settings for this process's `code` verifications (the pool calls it in every worker, and
    before serial verification)."""
    global _CONFIG
    _CONFIG = config


def extract_program(completion: str, entry_point: str = "", mode: str = "last_block") -> str:
    """The code of the completion's last fenced block ("" if none), see the module docstring."""
    blocks = [
        m.group(2) for m in _FENCE.finditer(completion) if m.group(1).lower() in _CODE_LANGUAGES
    ]
    if mode == "entry_point" and entry_point:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        defining = [b for b in blocks if pattern.search(b)]
        blocks = defining or blocks
    return blocks[-1] if blocks else ""


def build_job(program: str, row: Mapping[str, Any]) -> tuple[dict, list[str] | None]:
    """(harness job, expected stdio outputs or None). Raises ValueError for a malformed row."""
    if "inputs" in row or "outputs" in row:
        inputs, outputs = row.get("inputs"), row.get("outputs")
        if not _strings(inputs) or not _strings(outputs) or len(inputs) != len(outputs):
            raise ValueError("code row: inputs and outputs must be equally long lists of strings")
        return {"mode": "stdio", "program": program, "inputs": list(inputs)}, list(outputs)
    tests = row.get("tests")
    tests = [tests] if isinstance(tests, str) else tests
    if not _strings(tests):
        raise ValueError("code row: needs tests (a list of strings) or inputs and outputs")
    prefix = str(row.get("code_prefix") or "")
    job = {
        "mode": "assert",
        "program": f"{prefix}\n{program}" if prefix else program,
        "setup": str(row.get("test_setup") or ""),
        "tests": list(tests),
        "entry_point": str(row.get("entry_point") or ""),
    }
    return job, None


def _strings(value: object) -> bool:
    return (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) for v in value)
    )


@register("code")
def verify_code(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Run the completion's program against the row's tests in the sandbox. `gold` (a reference
    solution) is not used: the tests decide."""
    config = _CONFIG
    if config.require_namespaces and not sandbox.probe(True, config.python).namespaces:
        return Outcome.error("sandbox: namespaces required but unavailable here")
    program = extract_program(completion, str(row.get("entry_point") or ""), config.extract)
    if not program.strip():
        return Outcome.incorrect(reason="no code block")
    try:
        job, expected = build_job(program, row)
    except ValueError as e:
        return Outcome.error(str(e))
    result = sandbox.run(job, config.limits(), expected)
    total = len(expected) if expected is not None else len(job["tests"])
    return judge(result, total, config)


def judge(result: sandbox.Result, total: int, config: CodeConfig) -> Outcome:
    """The outcome of a sandbox run with `total` tests."""
    kinds = {r[0]: r for r in result.records}
    if "bad_tests" in kinds:
        return Outcome.error(f"code row: tests do not compile: {_field(kinds['bad_tests'], 1)}")
    if result.status in ("setup_error", "no_start", "abandoned"):
        what = {
            "no_start": f"harness did not start within {config.start_timeout_s:g} s",
            "abandoned": "abandoned",
        }.get(result.status, result.detail or "setup failed")
        return Outcome.error(f"sandbox: {what}")
    if result.outputs:
        passed = sum(v == "ok" for v in result.outputs)
        first = next((v for v in result.outputs if v != "ok"), "")
    else:
        ok = {r[1] for r in result.records if r[0] == "test" and len(r) > 2 and r[2] == "1"}
        passed = len(ok)
        failed = (r for r in result.records if r[0] == "test" and len(r) > 2 and r[2] == "0")
        first = next((_field(r, 3) or "failed" for r in failed), "")
    if passed == total and result.status == "finished":
        return Outcome.correct()
    score = passed / total if config.partial_credit and total else 0.0
    if result.status == "timeout":
        reason = f"time limit exceeded ({config.timeout_s:g} s)"
    elif result.status == "supervisor_died":
        reason = "the program killed its sandbox supervisor"
    elif "program" in kinds:
        reason = f"program failed: {_field(kinds['program'], 1)}"
    elif first:
        reason = f"{total - passed} of {total} tests failed: {first}"
    else:
        last = result.log.strip().splitlines()[-1:]  # e.g. a traceback's last line
        reason = f"exited (code {result.exit_code}) before its tests finished"
        reason += f": {last[0][:120]}" if last else ""
    return Outcome.incorrect(score=score, reason=reason)


def _field(record: list[str], index: int) -> str:
    return " ".join(record[index:]) if len(record) > index else ""
