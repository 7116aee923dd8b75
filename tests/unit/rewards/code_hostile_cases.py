"""Hostile programs for the code sandbox, each with the outcome it must get.

Every program is a completion (a fenced block) for a row whose tests call `add` (or, for
stdio rows, read two numbers). `expect(isolation)` gives the outcome status; where the program
tries to get out, it records whether it did in `escaped`, and its `add` is right only if it did
not: "correct" means "contained". Where a weaker isolation level does not
contain it (docs/verifiers.md), the expectation says so and names the level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from textwrap import dedent

ADD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
CONTAINED_ADD = "def add(a, b):\n    return a - b if escaped else a + b\n"  # wrong if it got out
ROW = {"tests": ["assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(2.5, 0) == 2.5"]}
STDIO_ROW = {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}


@dataclass
class Case:
    name: str
    program: str
    expect: Callable[[object], str] | str
    reason: str = ""  # a substring of the outcome's reason
    row: dict = field(default_factory=lambda: ROW)
    loops: bool = False  # runs until the sandbox's clock stops it

    def completion(self, token: str) -> str:
        body = self.program.replace("TOKEN", token)
        return f"Here it is:\n```python\n{body}\n```\n"

    def expected(self, isolation) -> str:
        return self.expect(isolation) if callable(self.expect) else self.expect


def files_contained(iso) -> str:
    return "correct" if iso.namespaces else "incorrect"


def user_files_contained(iso) -> str:
    """Files of the user running the verifier: out of reach in namespaces (read-only) or with a
    uid of its own; writable by a program running as that same user otherwise."""
    return "correct" if iso.namespaces or iso.own_uid else "incorrect"


def others_contained(iso) -> str:
    """Other processes and their environments: out of reach in namespaces or with a uid of
    its own; the same user's processes are reachable otherwise."""
    return "correct" if iso.namespaces or iso.own_uid else "incorrect"


def socket_case(name: str, host: str, port: int) -> Case:
    program = dedent(f"""
    import socket
    try:
        socket.create_connection(("{host}", {port}), timeout=1)
        escaped = True
    except OSError:
        escaped = False
    """)
    return Case(name, program + CONTAINED_ADD, "correct")


def cases(escape_dir: str, port: int, secret: str) -> list[Case]:
    """`escape_dir`: a directory of the test's; `port`: a listening socket on 127.0.0.1;
    `secret`: a value in the verifier's environment."""
    return [
        Case("correct", ADD, "correct"),
        Case("wrong", WRONG, "incorrect", "tests failed"),
        Case("syntax error", "def add(a, b) return a + b", "incorrect", "SyntaxError"),
        Case("no code block", "", "incorrect", "no code block"),
        Case("while True", "while True:\n    pass", "incorrect", "time limit", loops=True),
        Case(
            "loop inside the tested function",
            "def add(a, b):\n    while True:\n        pass",
            "incorrect",
            "time limit",
            loops=True,
        ),
        Case(
            "sleep, SIGTERM ignored",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(100)",
            "incorrect",
            "time limit",
            loops=True,
        ),
        Case("fork bomb", "import os\nwhile True:\n    os.fork()", "incorrect", ""),
        Case(
            "fork bomb that survives its errors",
            dedent("""
            import os
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
            """),
            "incorrect",
            "time limit",
            loops=True,
        ),
        Case(
            "thread bomb",
            dedent("""
            import threading, time
            for _ in range(10000):
                threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
            """),
            "incorrect",
            "can't start new thread",
        ),
        Case("10 GB allocation", "x = bytearray(10 * 1024 ** 3)", "incorrect", "MemoryError"),
        Case(
            "allocate until refused",
            "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))",
            "incorrect",  # MemoryError, or the time limit first on a slow machine
        ),
        Case(
            "deep recursion",
            dedent("""
            import sys
            sys.setrecursionlimit(10 ** 8)
            def down(n):
                return down(n + 1) + 1
            down(0)
            """),
            "incorrect",
            "",
        ),
        Case(
            "huge file",
            dedent("""
            with open("big.bin", "wb") as f:
                while True:
                    f.write(b"x" * (1 << 20))
            """),
            "incorrect",
            "",
        ),
        Case("print gigabytes", 'while True:\n    print("x" * 10 ** 6)', "incorrect", ""),
        Case(
            "write outside the work directory",
            # In namespaces /tmp is the sandbox's own tmpfs, gone after the run; the suite's
            # file check looks for these names on the host afterwards.
            dedent(f"""
            escaped = False
            for path in ["../TOKEN-up", "../../TOKEN-upup", "/tmp/TOKEN-tmp",
                         "/var/tmp/TOKEN-vartmp", "/dev/shm/TOKEN-shm", "{escape_dir}/TOKEN-abs"]:
                try:
                    with open(path, "w") as f:
                        f.write("escaped")
                    escaped = escaped or path.startswith(("/var", "/dev", "{escape_dir}"))
                except OSError:
                    pass
            """)
            + CONTAINED_ADD,
            files_contained,
        ),
        Case(
            "symlink out of the work directory",
            dedent(f"""
            import os
            os.symlink("{escape_dir}", "door")
            escaped = False
            try:
                with open("door/TOKEN-symlink", "w") as f:
                    escaped = f.write("escaped") > 0
            except OSError:
                pass
            """)
            + CONTAINED_ADD,
            user_files_contained,
        ),
        Case(
            "read the verifier's environment",
            dedent(f"""
            import os, subprocess
            escaped = "{secret}" in str(os.environ)
            for pid in ["self", "1", str(os.getppid())] + os.listdir("/proc"):
                try:
                    with open(f"/proc/{{pid}}/environ", "rb") as f:
                        escaped = escaped or b"{secret}" in f.read()
                except OSError:
                    pass
            # The harness's audit hook guards this process's opens; a child process has none.
            parent = f"/proc/{{os.getppid()}}/environ"
            cat = subprocess.run(["/bin/cat", parent], capture_output=True)
            escaped = escaped or b"{secret}" in cat.stdout
            """)
            + CONTAINED_ADD,
            others_contained,
        ),
        socket_case("socket to 127.0.0.1", "127.0.0.1", port),
        socket_case("socket to an outside address", "192.0.2.1", 80),  # TEST-NET-1
        Case(
            "kill the parent",
            dedent("""
            import os, signal
            try:
                os.kill(os.getppid(), signal.SIGKILL)
            except OSError:
                pass
            """)
            + ADD,
            others_contained,
        ),
        Case(
            "kill its own process group",
            "import os, signal\nos.killpg(0, signal.SIGKILL)\n" + ADD,
            "incorrect",
            "before its tests finished",
        ),
        Case(
            "kill every process it may",
            "import os, signal\nos.kill(-1, signal.SIGKILL)\n" + ADD,
            "incorrect",
            "PermissionError",
        ),
        Case("close stdout and stderr", "import os\nos.close(1)\nos.close(2)\n" + ADD, "correct"),
        Case(
            "daemon that outlives the test",
            dedent("""
            import os, time
            child = os.fork()
            if child == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(1000)
                os._exit(0)
            os.waitpid(child, 0)
            """)
            + ADD,
            "correct",
        ),
        Case("sys.exit(0) before the asserts", "import sys\nsys.exit(0)\n" + ADD, "incorrect"),
        Case("os._exit(0) before the asserts", "import os\nos._exit(0)\n" + ADD, "incorrect"),
        Case(
            "exit inside the tested function",
            "import sys\ndef add(a, b):\n    sys.exit(0)",
            "incorrect",
            "SystemExit",
        ),
        Case(
            "monkey-patch builtins the tests use",
            "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
            "builtins.abs = lambda x: 0\nbuiltins.all = lambda x: True\n" + WRONG,
            "incorrect",
            "tests failed",
        ),
        Case(
            "monkey-patch the harness",
            dedent("""
            import __main__, sys
            for name in dir(__main__):
                setattr(__main__, name, lambda *a, **k: True)
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "") in ("json", "os", "posix"):
                    module.write = lambda *a, **k: 0
            """)
            + WRONG,
            "incorrect",
            "tests failed",
        ),
        Case(
            "forge result records",
            dedent("""
            import os
            for fd in range(1, 20):
                for line in (b"start\\n", b"test 0 1\\n", b"x test 0 1\\n"):
                    try:
                        os.write(fd, line)
                    except OSError:
                        pass
            """)
            + WRONG,
            "incorrect",
            "tests failed",
        ),
        Case(
            "always-equal object",
            "class Anything:\n    def __eq__(self, other):\n        return True\n"
            "    __hash__ = object.__hash__\n"
            "def add(a, b):\n    return Anything()",
            "incorrect",
            "own class",
        ),
        Case(
            "read the expected values from the caller's frame",
            dedent("""
            import sys
            def add(a, b):
                frame = sys._getframe(1)
                return frame.f_code.co_consts
            """),
            "incorrect",
            "not allowed",
        ),
        Case(
            "hunt the tests through the garbage collector",
            "import gc\nleak = gc.get_objects()\n" + WRONG,
            "incorrect",
            "not allowed",
        ),
        Case(
            "an audit hook to see the tests' code",
            "import sys\nseen = []\nsys.addaudithook(lambda e, a: seen.append(a))\n"
            "def add(a, b):\n    return [x for x in seen if x][-1]",
            "incorrect",
            "tests failed",
        ),
        Case("ctypes", "import ctypes\n" + ADD, "incorrect", "not allowed"),
        Case(
            "import the harness to read the expected outputs",
            dedent("""
            import importlib
            for name in ("code_harness", "rewards.code_harness", "__harness__"):
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass
                else:
                    raise SystemExit("found")
            with open("/proc/self/cmdline", "rb") as f:
                f.read()
            """)
            + ADD,
            "incorrect",
            "",
        ),
        Case("block on stdin", "input()\n" + ADD, "incorrect", "EOFError"),
        Case(
            "run out of file descriptors",
            dedent("""
            import os
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for fd in held:
                os.close(fd)
            """)
            + ADD,
            "correct",
        ),
        Case(
            "stdio: correct",
            "a, b = map(int, input().split())\nprint(a + b)",
            "correct",
            row=STDIO_ROW,
        ),
        Case(
            "stdio: wrong",
            "a, b = map(int, input().split())\nprint(a - b)",
            "incorrect",
            "wrong output",
            row=STDIO_ROW,
        ),
        Case(
            "stdio: exits non-zero after the right output",
            "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(3)",
            "incorrect",
            "exit status 3",
            row=STDIO_ROW,
        ),
        Case(
            "stdio: floods stdout",
            "while True:\n    print('y' * 10 ** 6)",
            "incorrect",
            "",
            row=STDIO_ROW,
        ),
    ]
