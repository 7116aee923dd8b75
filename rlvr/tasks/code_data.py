"""Code tasks as rows for the `code` verifier (rewards/code_verifier.py).

`humaneval_row` turns a HumanEval record (task_id, prompt, entry_point, canonical_solution,
test) into a row whose tests are scored one by one: the `check(candidate)` function's body is
split into units, each a top-level statement that asserts something about `candidate`, with the
statements before it (set-up such as `import math` or a seeded generator) run as part of it.
The rest of the test module (METADATA, imports) becomes `test_setup`. The program is the
prompt (imports, helper functions, the stub) followed by the completion's code, as in
HumanEval's own harness, so a completion that writes only the function still finds the
helpers; the gold answer is the prompt followed by the canonical solution.
"""

from __future__ import annotations

import ast

CODE_INSTRUCTION = (
    "Complete the following Python function. Write the whole function (with any imports it "
    "needs) in one ```python code block."
)


def split_check(test_source: str) -> tuple[str, list[str]]:
    """(setup, units) of a HumanEval test module: `check`'s body as separately scored units,
    and everything else as set-up. Raises ValueError if there is no `check` function."""
    tree = ast.parse(test_source)
    lines = test_source.splitlines()
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        raise ValueError("a HumanEval test needs exactly one `def check(candidate)`")
    setup = "\n".join(
        ast.get_source_segment(test_source, n) or "" for n in tree.body if n is not checks[0]
    )
    units, pending = [], []
    for statement in checks[0].body:
        text = _dedented(lines, statement)
        pending.append(text)
        if _asserts_on_candidate(statement):
            units.append("\n".join(pending))
            pending = []
    if pending:  # trailing set-up (or no scored assert at all): it still has to run
        if units:
            units[-1] += "\n" + "\n".join(pending)
        else:
            units.append("\n".join(pending))
    return setup, units


def _asserts_on_candidate(node: ast.AST) -> bool:
    nodes = list(ast.walk(node))
    return any(isinstance(n, ast.Assert) for n in nodes) and any(
        isinstance(n, ast.Name) and n.id == "candidate" for n in nodes
    )


def _dedented(lines: list[str], node: ast.stmt) -> str:
    """The statement's source lines (decorators and all), without the function's indent."""
    block = lines[node.lineno - 1 : node.end_lineno]
    indent = len(block[0]) - len(block[0].lstrip())
    return "\n".join(line[indent:] if line[:indent].isspace() else line for line in block)


def humaneval_row(record: dict) -> dict:
    """A HumanEval record as a `code` row (see the module docstring)."""
    setup, units = split_check(record["test"])
    return {
        **record,
        "answer": record["prompt"] + record["canonical_solution"],
        "tests": units,
        "test_setup": setup,
        "code_prefix": record["prompt"],
        "verifier": "code",
    }
