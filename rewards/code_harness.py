"""The program that runs inside the code sandbox: it executes a model-written program and its
tests and reports what happened. Standard library only. The sandbox passes this file's text to
`python -I -S -B -c BOOTSTRAP TEXT` (rewards/sandbox.py), and BOOTSTRAP runs it in a private
namespace with a private copy of the builtins: there is no harness file or module for the
program to read, import or patch.

Protocol. fd 3 carries one JSON job, read whole and closed before any program code runs:
    {"nonce", "mode": "assert" | "stdio", "program", "setup", "tests" (assert units),
     "entry_point", "inputs" (stdio cases)}
fd 4 takes result records, one line each, starting with the nonce:
    NONCE bad_tests ERROR        the row's tests do not compile (before start: an error)
    NONCE start                  before the program is compiled or run
    NONCE program ERROR          the program does not compile or its top level raised
    NONCE test I OK ERROR        one assert unit, OK 1 or 0 (assert mode)
    NONCE case I STATUS          one stdio case's exit status; its output is the file out<I>.txt,
                                 which the supervisor reads and compares
The supervisor believes only lines with the nonce; nothing else decides a pass. A program that
exits early, kills the harness or closes fd 4 just leaves its tests without a passing record.
Records are formatted with str methods only (not json), which a program cannot patch.

Assert mode runs program and tests in this process (they must share functions). Before the
program runs: the tests are compiled, an audit hook shuts the doors through which Python code
reaches other code's data (frames, the garbage collector, ctypes, tracing, new audit hooks,
/proc), and the builtins are snapshot. The tests then run with the snapshot builtins, and every
value a test call returns, compares or asserts is checked: an object whose class the program
defined (an `__eq__` that always says True) fails the test. Stdio mode runs each case in a fork
whose fd 0 is the case's input and fd 1 its output file; the expected outputs never enter the
sandbox (the supervisor compares them).
"""

import ast
import builtins
import json
import os
import sys

# Run by `python -c BOOTSTRAP HARNESS_TEXT`: the harness gets its own globals and builtins,
# held only by a frame the program cannot reach (not by __main__, which it can import).
BOOTSTRAP = """
def _bootstrap():
    import builtins, sys
    harness = {"__name__": "__harness__", "__builtins__": dict(builtins.__dict__)}
    exec(compile(sys.argv.pop(1), "<harness>", "exec"), harness)
    harness["main"]()
_bootstrap()
"""
SOLUTION_FILE = "<solution>"
SOLUTION_MODULE = "solution"
_BLOCKED_EVENTS = frozenset(
    {
        "sys._getframe",
        "sys._current_frames",
        "sys.settrace",
        "sys.setprofile",
        "sys.addaudithook",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
_BLOCKED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})


class SandboxDenied(PermissionError, RuntimeError, ValueError):
    """Raised by the audit hook. A PermissionError, as a refused open() would be; a ValueError,
    so the stdlib's own `sys._getframe` users (namedtuple, typing, warnings, enum) fall back as
    on interpreters without frames; a RuntimeError, so `sys.addaudithook` drops the program's
    hook silently."""


def _audit(event, args):
    if event in _BLOCKED_EVENTS or event.startswith("ctypes."):
        raise SandboxDenied(f"sandbox: {event} is not allowed")
    if event == "object.__getattr__" and args[1] in _BLOCKED_ATTRIBUTES:
        raise SandboxDenied(f"sandbox: reading {args[1]} is not allowed")
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith("/proc") or os.path.realpath(path).startswith("/proc"):
            raise SandboxDenied("sandbox: /proc is not readable")


def _describe(exc):
    try:
        text = str(exc)
    except BaseException:
        text = "?"
    return f"{type(exc).__name__}: {text}"[:300]


_FOREIGN_TYPES = {}  # type -> bool; in the harness's private globals, out of the program's reach
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _foreign_type(cls):
    """Whether the program defined `cls` or one of its bases (by module name, or by a method
    compiled from its text)."""
    known = _FOREIGN_TYPES.get(cls)
    if known is None:
        known = False
        for base in cls.__mro__:
            if base.__module__ == SOLUTION_MODULE:
                known = True
            for attr in vars(base).values():
                fn = getattr(attr, "__func__", attr)
                code = getattr(fn, "__code__", None)
                if code is not None and code.co_filename == SOLUTION_FILE:
                    known = True
        _FOREIGN_TYPES[cls] = known
    return known


def _is_foreign(value, depth=0):
    """Whether `value` is, or contains (through lists, tuples, sets and dicts), an instance of a
    class the program defined."""
    cls = type(value)
    if _foreign_type(cls):
        return True
    if cls not in _CONTAINERS or depth > 50:
        return False
    items = list(value.keys()) + list(value.values()) if cls is dict else value
    kinds = {type(v) for v in items}
    if any(_foreign_type(k) for k in kinds):
        return True
    if kinds.isdisjoint(_CONTAINERS):
        return False
    return any(_is_foreign(v, depth + 1) for v in items if type(v) in _CONTAINERS)


def _plain(value):
    if _is_foreign(value):
        raise AssertionError(f"the program returned an object of its own class {type(value)!r}")
    return value


_OPS = {
    "Eq": lambda a, b: a == b,
    "NotEq": lambda a, b: a != b,
    "Lt": lambda a, b: a < b,
    "LtE": lambda a, b: a <= b,
    "Gt": lambda a, b: a > b,
    "GtE": lambda a, b: a >= b,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": lambda a, b: a is b,
    "IsNot": lambda a, b: a is not b,
}


def _compare(ops, *operands):
    """A comparison chain over checked operands (all evaluated, unlike Python's short cut)."""
    for value in operands:
        _plain(value)
    return all(_OPS[op](a, b) for op, a, b in zip(ops, operands, operands[1:]))


class _Guard(ast.NodeTransformer):
    """Routes the tests' calls, comparisons and asserted values through _plain / _compare."""

    def _call(self, name, args, node):
        call = ast.Call(ast.Name(name, ast.Load()), args, [])
        return ast.copy_location(call, node)

    def visit_Call(self, node):
        self.generic_visit(node)
        return self._call("__rlvr_plain__", [node], node)

    def visit_Compare(self, node):
        self.generic_visit(node)
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        return self._call("__rlvr_compare__", [ops, node.left, *node.comparators], node)

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = self._call("__rlvr_plain__", [node.test], node.test)
        return node


def _compile_test(source, index):
    tree = _Guard().visit(ast.parse(source))
    return compile(ast.fix_missing_locations(tree), f"<test {index}>", "exec", optimize=0)


def _compile_program(job, report):
    """The program's code object, or None after reporting why it does not compile (its fault:
    the harness has started)."""
    report("start")
    try:
        return compile(job["program"], SOLUTION_FILE, "exec", optimize=0)
    except BaseException as e:  # SyntaxError, ValueError (NUL bytes), MemoryError, RecursionError
        report("program", _describe(e))
        return None


def run_asserts(job, report):
    try:
        units = [_compile_test(t, i) for i, t in enumerate(job["tests"])]
        setup = compile(job.get("setup") or "", "<setup>", "exec", optimize=0)
    except BaseException as e:  # the row's tests are broken: not the program's fault
        report("bad_tests", _describe(e))
        return
    program = _compile_program(job, report)
    if program is None:
        return
    pristine = dict(builtins.__dict__)
    namespace = {"__name__": SOLUTION_MODULE, "__builtins__": builtins}
    sys.addaudithook(_audit)
    try:
        exec(program, namespace)
    except BaseException as e:  # SystemExit too: the tests have not run, nothing passes
        report("program", _describe(e))
        return
    # The tests see the program's names (HumanEval's checks call its helpers) but the
    # builtins as they were before it ran, and no module-level name shadowing a builtin.
    tests = {k: v for k, v in namespace.items() if k not in pristine}
    tests.update(__builtins__=pristine, __rlvr_plain__=_plain, __rlvr_compare__=_compare)
    tests["__name__"] = "tests"
    entry = job.get("entry_point")
    if entry:
        tests["candidate"] = namespace.get(entry)
    try:
        exec(setup, tests)
    except BaseException as e:
        report("program", "test setup: " + _describe(e))
        return
    for i, unit in enumerate(units):
        if entry and not callable(tests.get("candidate")):
            report("test", i, 0, f"{entry} is not defined")
            continue
        try:
            exec(unit, tests)
        except BaseException as e:
            report("test", i, 0, _describe(e))
        else:
            report("test", i, 1)


def run_stdio(job, report):
    program = _compile_program(job, report)
    if program is None:
        return
    sys.addaudithook(_audit)
    for i, text in enumerate(job["inputs"]):
        with open(f"in{i}.txt", "w", encoding="utf-8") as f:
            f.write(text)
        pid = os.fork()
        if pid == 0:
            _run_case(program, i)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        report("case", i, status)


def _run_case(program, i):
    """In a fork: the program reads in<i>.txt on fd 0 and writes out<i>.txt on fd 1."""
    code = 1
    try:
        os.close(4)  # the result channel is the parent's; this child has nothing to report
        os.dup2(os.open(f"in{i}.txt", os.O_RDONLY), 0)
        os.dup2(os.open(f"out{i}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        try:
            exec(program, {"__name__": "__main__", "__builtins__": builtins})
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            sys.stderr.write(_describe(e) + "\n")
        sys.stdout.flush()
    finally:
        os._exit(code)


def main():
    data = b""
    while True:
        chunk = os.read(3, 1 << 20)
        if not chunk:
            break
        data += chunk
    os.close(3)
    job = json.loads(data)
    nonce, write = job.pop("nonce"), os.write

    def report(*fields):
        line = " ".join([nonce, *(str(f).replace("\n", " ") for f in fields)]) + "\n"
        try:
            write(4, line.encode("utf-8", "replace"))
        except OSError:  # the program closed fd 4: its remaining tests get no record
            pass

    (run_stdio if job["mode"] == "stdio" else run_asserts)(job, report)
    os._exit(0)  # skip atexit handlers and thread joins the program may have left behind


if __name__ == "__main__":
    main()
