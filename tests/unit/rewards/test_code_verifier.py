"""The `code` verifier: extraction, rows, outcomes and partial credit, the harness's guards, the
settings reaching pool workers, and a pool timeout that kills a worker mid-run leaving nothing."""

import os
import shutil
import time

import pytest
from test_code_hostile import marked_python, sandbox_processes

from rewards import VerifierPool, VerifyRequest, code_verifier, sandbox
from rewards.code_verifier import CodeConfig, extract_program, verify_code
from rewards.pool import PoolConfig

FAST = CodeConfig(timeout_s=2.0, start_timeout_s=5.0)
ROW = {"tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 5"]}


def fenced(code: str, lang: str = "python") -> str:
    return f"```{lang}\n{code}\n```"


@pytest.fixture(autouse=True)
def fast_settings():
    code_verifier.configure(FAST)
    yield
    code_verifier.configure(CodeConfig())


def test_extract_takes_the_last_python_block():
    text = "Try:\n```python\nx = 1\n```\nBetter:\n```py\nx = 2\n```\nRun:\n```bash\nls\n```"
    assert extract_program(text) == "x = 2\n"
    assert extract_program("```\nbare = 1\n```") == "bare = 1\n"
    assert extract_program("```python\ncut = 1\n") == "cut = 1\n"  # generation stopped inside
    assert extract_program("no code here") == ""
    blocks = "```python\ndef f(x):\n    return x\n```\n```python\nprint(f(2))\n```"
    assert extract_program(blocks) == "print(f(2))\n"
    assert extract_program(blocks, "f", "entry_point") == "def f(x):\n    return x\n"
    assert extract_program(blocks, "g", "entry_point") == "print(f(2))\n"  # none defines g


def test_outcomes_and_partial_credit():
    half = "def add(a, b):\n    return 4 if (a, b) == (2, 2) else 0"
    assert verify_code(fenced("def add(a, b):\n    return a + b"), "", ROW).status == "correct"
    wrong = verify_code(fenced(half), "", ROW)
    assert (wrong.status, wrong.score) == ("incorrect", 0.0)
    assert wrong.reason.startswith("2 of 3 tests failed")
    code_verifier.configure(FAST.model_copy(update={"partial_credit": True}))
    partial = verify_code(fenced(half), "", ROW)
    assert (partial.status, partial.score) == ("incorrect", pytest.approx(1 / 3))
    assert verify_code(fenced("def add(a, b):\n    return a + b"), "", ROW).score == 1.0


def test_entry_point_prefix_and_setup():
    row = {
        "code_prefix": "import math\n\ndef helper(x):\n    return x * 2\n\n"
        "def double(x):\n    '''stub'''\n",
        "entry_point": "double",
        "test_setup": "FACTOR = 2",
        "tests": ["assert candidate(3) == 6", "assert candidate(0) == 0 * FACTOR"],
    }
    uses_helper = fenced("def double(x):\n    return helper(x)")
    assert verify_code(uses_helper, "", row).status == "correct"
    stub_only = verify_code(fenced("print('no function')"), "", row)
    assert stub_only.status == "incorrect"  # the prompt's stub returns None


def test_malformed_rows_and_bad_tests_are_errors():
    program = fenced("x = 1")
    assert verify_code(program, "", {}).status == "error"
    assert verify_code(program, "", {"inputs": ["1"], "outputs": []}).status == "error"
    bad = verify_code(program, "", {"tests": ["assert (("]})
    assert bad.status == "error" and "tests do not compile" in bad.reason


def test_stdio_cases_are_judged_outside_the_sandbox():
    row = {"inputs": ["3\n", "5\n"], "outputs": ["9  \n\n", "25\n"]}
    square = fenced("n = int(input())\nprint(n * n)")
    assert verify_code(square, "", row).status == "correct"  # trailing blanks do not matter
    # The expected outputs never enter the sandbox: a program looking for them finds nothing.
    snoop = "import os\nprint(sorted(os.listdir('.')))\nprint(open('in0.txt').read())"
    result = sandbox.run(
        {"mode": "stdio", "program": snoop, "inputs": ["3\n"]}, FAST.limits(), ["9"]
    )
    assert result.outputs == ["wrong output"]


def test_guards_keep_plain_values_and_stdlib_types():
    code = (
        "from collections import Counter, namedtuple\nfrom fractions import Fraction\n"
        "P = namedtuple('P', 'x y')\n"
        "def add(a, b):\n    return Fraction(a + b)\n"
        "def pair():\n    return P(1, 2)\n"
    )
    row = {
        "tests": [
            "assert add(1, 2) == 3",
            "assert pair() == (1, 2)",
            "assert Counter('aa')['a'] == 2",
        ]
    }
    assert verify_code(fenced(code), "", row).status == "correct"
    subclass = "class Int(int):\n    pass\ndef add(a, b):\n    return Int(a + b)"
    result = verify_code(fenced(subclass), "", ROW)  # a class of its own, even if harmless
    assert result.status == "incorrect" and "own class" in result.reason


def test_settings_reach_the_pool_workers():
    slow = fenced("import time\ntime.sleep(1.5)\ndef add(a, b):\n    return a + b")
    tight = CodeConfig(timeout_s=0.5, start_timeout_s=5.0)
    with VerifierPool(PoolConfig(num_workers=1, timeout_s=10.0, code=tight)) as pool:
        [outcome] = pool.verify_batch([VerifyRequest("code", slow, "", ROW)])
    assert outcome.status == "incorrect" and outcome.reason == "time limit exceeded (0.5 s)"


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "process-group"])
def test_pool_timeout_kills_the_sandbox_with_the_worker(namespaces):
    """verifier.timeout_s shorter than the program's clock (what require() refuses): the pool
    SIGKILLs the worker mid-run, and the sandbox, losing its lifeline, kills everything."""
    token = f"rlvr-pool-timeout-{os.getpid()}"
    python = marked_python(token)
    code = CodeConfig(
        timeout_s=30.0, start_timeout_s=5.0, namespaces=namespaces, python=str(python)
    )
    spin = fenced("import os\nos.fork()\nos.fork()\nwhile True:\n    pass")
    with VerifierPool(PoolConfig(num_workers=1, timeout_s=1.5, code=code)) as pool:
        with pytest.raises(ValueError, match="too small for the code verifier"):
            pool.require({"code"})
        start = time.monotonic()
        [outcome] = pool.verify_batch([VerifyRequest("code", spin, "", ROW)])
        assert outcome.status == "error" and "timeout" in outcome.reason
        took = time.monotonic() - start
        assert took < 1.5 + 1.0, f"took {took:.2f} s"  # the pool's own promise
        deadline = time.monotonic() + 5.0  # S notices its lifeline closing, then kills
        while sandbox_processes(pool, token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox_processes(pool, token) == []
        fine = fenced("def add(a, b):\n    return a + b")
        assert pool.verify_batch([VerifyRequest("code", fine, "", ROW)])[0].status == "correct"
        assert pool.metrics()["verifier/pool/restarts"] == 1
    shutil.rmtree(python.parent)


def test_the_sandbox_is_checked_at_start():
    line = code_verifier.check_sandbox(CodeConfig(namespaces=False))
    assert line.startswith("process group, seccomp") and "namespaces disabled" in line
    strict = CodeConfig(namespaces=False, require_namespaces=True)
    with pytest.raises(ValueError, match="require_namespaces=true, but the sandbox has process"):
        code_verifier.check_sandbox(strict)
    here = code_verifier.check_sandbox(CodeConfig())
    assert here == sandbox.probe(True).describe()  # the workers' probe sees the same
