"""Find the final answer in free text: last \\boxed{}, "the answer is X", last number.

Pure string code, linear in the text length: no regex that can backtrack badly and no
conversion of huge numbers, so a hostile 1 MB completion costs milliseconds. The data adapters
use `last_boxed` to take gold answers out of MATH-style reference solutions.
"""

from __future__ import annotations

import re

# Fallbacks look only at the end of a completion: a final answer is stated last, and bounding
# the window keeps the regexes below cheap on megabyte-sized outputs.
TAIL_CHARS = 4000
MAX_ANSWER_CHARS = 1000

# Between two boxes, only these mean "one answer in several boxes" ("\boxed{1} and \boxed{2}").
_BOX_SEPARATOR = re.compile(r"^[\s$,;.]*(?:and|or|,)?[\s$,;.]*(?:\\[()\[\]])?[\s$]*$")
_ANSWER_IS = re.compile(
    r"(?i)(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*"
    r"(\$[^$\n]{1,300}\$|\\\([^\n]{1,300}?\\\)|[^\n]{1,300})"
)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_MAX_NUMBER_CHARS = 40
_MAX_JOINED_BOXES = 8  # bounds the backward walk on completions made of thousands of boxes


_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")
_BOX_START = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])\s*(\{)?")
_BRACE = re.compile(r"(?<!\\)[{}]")  # \{ and \} are LaTeX set braces, not groups
_TOKEN = re.compile(r"[^\s$.,{}]+")


def _box_at(text: str, start: int) -> tuple[int, str] | None:
    """(end, content) of the box command at `start`, or None when its argument is missing,
    unbalanced or longer than MAX_ANSWER_CHARS. Looks at most MAX_ANSWER_CHARS ahead, so a
    10k-deep nest of braces costs no more than a normal answer."""
    m = _BOX_START.match(text, start)
    if m is None:
        return None
    if m.group(1) is None:  # "\boxed 5": the argument is the next token
        token = _TOKEN.match(text, m.end()) if text[m.end() - 1 : m.end()].isspace() else None
        return (token.end(), token.group(0)) if token else None
    open_at = m.start(1)
    depth = 0
    for b in _BRACE.finditer(text, open_at, open_at + MAX_ANSWER_CHARS + 2):
        depth += 1 if text[b.start()] == "{" else -1
        if depth == 0:
            return b.end(), text[open_at + 1 : b.start()]
    return None


def _last_command(text: str, before: int) -> int:
    """Start of the last box command that begins before `before`, or -1."""
    return max(text.rfind(cmd, 0, before) for cmd in _BOX_COMMANDS)


def last_boxed(text: str) -> str | None:
    """Content of the last box command; None when there is none or its argument is unusable.

    Boxes just before it that only "and" / "or" / "," separate are joined with ", ", so
    "\\boxed{1} and \\boxed{2}" gives "1, 2" (a set answer) and hedging ("\\boxed{3} or
    \\boxed{5}") is judged as the set {3, 5}. The last command decides: an earlier box is never
    used in place of a broken last one, so a broken box cannot resurrect an old guess.
    """
    start = _last_command(text, len(text))
    last = _box_at(text, start) if start != -1 else None
    if last is None:
        return None
    parts = [last[1].strip()]
    while len(parts) < _MAX_JOINED_BOXES:
        prev = _last_command(text, start)
        box = _box_at(text, prev) if prev != -1 else None
        if box is None or box[0] > start or not _BOX_SEPARATOR.match(text[box[0] : start]):
            break
        parts.insert(0, box[1].strip())
        start = prev
    return ", ".join(parts)


def answer_is(text: str) -> str | None:
    """The last "the answer is X" / "Answer: X" phrase of the tail, from "answer" to the end of
    its sentence (at most ~300 characters). The phrase is kept whole because math-verify's
    anchored patterns read "answer is $\\frac12$" or "answer is 5 dollars" better than any
    cut we could make."""
    tail = text[-TAIL_CHARS:]
    found = None
    for m in _ANSWER_IS.finditer(tail):
        found = m
    if found is None:
        return None
    value = found.group(1).strip()
    if not (value.startswith("$") or value.startswith("\\(")):
        value = re.split(r"\.(?:\s|$)", value, maxsplit=1)[0]
    value = value.strip().rstrip(".").strip()
    if not value:
        return None
    return tail[found.start() : found.start(1)] + value


def last_number(text: str) -> str | None:
    """The last number (integer, decimal, a/b, 1,234) in the tail, thousands commas removed."""
    tail = text[-TAIL_CHARS:]
    found = None
    for m in _NUMBER.finditer(tail):
        found = m.group(0)
    if found is None or len(found) > _MAX_NUMBER_CHARS:
        return None
    return found.replace(",", "").replace(" ", "")


FALLBACKS = {"answer_is": answer_is, "last_number": last_number}


def extract_answer(
    text: str, fallbacks: tuple[str, ...] = ("answer_is", "last_number")
) -> tuple[str, str] | None:
    """(how, answer): the last box ("boxed", its content), else the first of `fallbacks` that
    finds something ("answer_is" gives the whole phrase, "last_number" the number)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return "boxed", boxed
    for name in fallbacks:
        found = FALLBACKS[name](text)
        if found is not None:
            return name, found
    return None
