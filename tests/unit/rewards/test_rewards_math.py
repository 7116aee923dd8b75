"""The `math` verifier on a hand-written table, and answer extraction on its own.

Each expectation is what a grader reading the completion would decide: equal values in another
form are correct; a different value, a missing answer or a hedge between values is not.
"""

import threading
import time

import pytest

from rewards.base import CORRECT, ERROR, INCORRECT
from rewards.extract import answer_is, extract_answer, last_boxed, last_number
from rewards.math_verifier import make_math_verifier, verify_math, verify_math_boxed

C, W = CORRECT, INCORRECT  # W: wrong

# (completion, gold, expected status)
TABLE = [
    # LaTeX fractions
    (r"So the probability is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", C),
    (r"\boxed{\dfrac{3}{4}}", r"\frac34", C),
    (r"\boxed{\tfrac{2}{6}}", r"\frac{1}{3}", C),
    (r"\boxed{6/8}", r"\frac{3}{4}", C),
    (r"\boxed{\frac{-1}{2}}", r"-\frac{1}{2}", C),
    (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", W),
    (r"\boxed{\frac{14}{3}}", r"\frac{14}{3}", C),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", C),
    (r"\boxed{\sqrt{2}/2}", r"\frac{1}{\sqrt{2}}", C),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", C),
    (r"\boxed{\frac{\pi}{3}}", r"\frac{\pi}{2}", W),
    # decimals and integers
    (r"\boxed{0.5}", r"\frac{1}{2}", C),
    (r"\boxed{0.25}", "1/4", C),
    (r"\boxed{3.0}", "3", C),
    (r"\boxed{.75}", r"\frac{3}{4}", C),
    (r"\boxed{0.333}", r"\frac{1}{3}", W),  # rounding to 3 places is not the exact value
    (r"\boxed{1.6}", "1.6", C),
    (r"\boxed{1.61}", "1.6", W),
    (r"\boxed{4.5 \times 10^{33}}", "4.5e33", C),
    (r"\boxed{4.5e33}", r"4.5 \times 10^{33}", C),
    (r"\boxed{2.88 \times 10^{-19}}", "2.88e-19", C),
    (r"\boxed{1.325e-27}", "2.88e-19", W),  # both round to 0 at 6 decimals: compared relatively
    (r"\boxed{2.9 \times 10^{-19}}", "2.88e-19", W),
    (r"\boxed{0}", "1e-9", W),
    (r"\boxed{-7}", "-7", C),
    (r"\boxed{7}", "-7", W),
    (r"\boxed{1,600}", "1600", C),  # thousands separator
    (r"\boxed{1{,}600}", "1600", C),
    (r"\boxed{70000}", "70,000", C),
    (r"\boxed{204}", "204", C),
    (r"\boxed{205}", "204", W),
    # percentages
    (r"\boxed{50\%}", "50", C),
    (r"\boxed{50\%}", r"50\%", C),
    (r"\boxed{25\%}", r"0.25", C),
    (r"\boxed{20\%}", "25", W),
    (r"The answer is 12%.", "12", C),
    # intervals
    (r"\boxed{(1, 2]}", "(1,2]", C),
    (r"\boxed{[1,2)}", "(1,2]", W),
    (r"\boxed{(-\infty, 3)}", r"(-\infty,3)", C),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3)", W),
    (r"\boxed{[0, \infty)}", r"[0,\infty)", C),
    (r"\boxed{(-\infty,-2)\cup(2,\infty)}", r"(-\infty,-2) \cup (2,\infty)", C),
    (r"\boxed{(2,\infty)}", r"(-\infty,-2) \cup (2,\infty)", W),
    # sets and tuples
    (r"\boxed{\{1, 2, 3\}}", r"\{3,2,1\}", C),
    (r"\boxed{\{1, 2\}}", r"\{1,2,3\}", W),
    (r"\boxed{1, 2}", r"2, 1", C),
    (r"\boxed{3, 5, 7}", r"3,5,7", C),
    (r"\boxed{3, 5}", r"3,5,7", W),
    (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)", C),
    (r"\boxed{(3, \pi)}", r"\left( 3, \frac{\pi}{2} \right)", W),
    (r"\boxed{(1,8,19), (2,7,13), (4,5,7)}", r"(1,8,19), (2,7,13), (4,5,7)", C),
    # equations and expressions
    (r"\boxed{x = 5}", "5", C),
    (r"\boxed{5}", "x=5", C),
    (r"\boxed{y = 2x + 3}", "y=2x+3", C),
    (r"\boxed{y = 3 + 2x}", "y=2x+3", C),
    (r"\boxed{y = 2x - 3}", "y=2x+3", W),
    (r"\boxed{x^2 + 2x + 1}", r"(x+1)^2", C),
    (r"\boxed{x^2 + 1}", r"(x+1)^2", W),
    (r"\boxed{p - q}", "p - q", C),
    (r"\boxed{q - p}", "p - q", W),
    (r"\boxed{2n-2}", "2(n-1)", C),
    (r"\boxed{\frac{1}{2n+2}}", r"\frac{1}{2 n+2}", C),
    (r"\boxed{2^{1009}}", r"2^{1009}", C),
    (r"\boxed{2^{1008}}", r"2^{1009}", W),
    # units and text around the value
    (r"\boxed{10\text{ cm}}", "10", C),
    (r"\boxed{10 \mathrm{~cm}}", "10", C),
    (r"\boxed{\$18}", "18", C),
    (r"\boxed{30^\circ}", "30", C),
    (r"\boxed{45^{\circ}}", "30", W),
    (r"\boxed{12 \text{ inches}}", "12", C),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", C),
    (r"\boxed{\text{(C)}}", r"\text{(C)}", C),
    (r"\boxed{\text{(B)}}", r"\text{(C)}", W),
    # multiple boxes: the last one counts; boxes joined by "and"/"," form one set answer
    (r"First \boxed{3}, but after checking, \boxed{4}.", "4", C),
    (r"First \boxed{4}, but after checking, \boxed{3}.", "4", W),
    (r"The roots are \boxed{1} and \boxed{2}.", "1, 2", C),
    (r"It is \boxed{3} or \boxed{5}.", "3", W),  # a hedge is not an answer
    (r"$\boxed{2}$, $\boxed{-2}$", r"\pm 2", C),
    (r"\boxed{\boxed{6}}", "6", C),
    # fallbacks when there is no box (math), none at all (math_boxed tested below)
    ("The answer is 42.", "42", C),
    (r"Final answer: $\frac{1}{2}$", "0.5", C),
    ("After simplifying we get 9 apples, then 3 more: 12", "12", C),
    ("#### 2,125", "2125", C),
    ("The answer is 41.", "42", W),
    # no answer and junk
    ("I do not know.", "42", W),
    ("", "42", W),
    (r"\boxed{}", "42", W),
    (r"\boxed{\text{no solution}}", "3", W),
    (r"\boxed{3", "4", W),  # unclosed box: the fallback finds 3, which is wrong
    (r"\boxed{x}", "3", W),
    (r"\boxed{\frac{1}{0}}", "3", W),
    (r"\boxed{0.5}", "0.05", W),
    (r"\boxed{\$19}", "18", W),
    (r"\boxed{-\frac{1}{2}}", r"\frac{1}{2}", W),
]


def test_table_is_broad_and_balanced():
    assert len(TABLE) >= 80
    statuses = [row[2] for row in TABLE]
    assert statuses.count(C) >= 30 and statuses.count(W) >= 30


@pytest.mark.parametrize("completion,gold,expected", TABLE)
def test_math_verifier_table(completion, gold, expected):
    outcome = verify_math(completion, gold, {})
    assert outcome.status == expected, outcome
    assert outcome.score == (1.0 if expected == C else 0.0)


def test_math_boxed_ignores_unboxed_answers():
    assert verify_math_boxed("The answer is 42.", "42", {}).status == INCORRECT
    assert verify_math_boxed("The answer is 42.", "42", {}).reason == "no answer"
    assert verify_math_boxed(r"so \boxed{42}", "42", {}).status == CORRECT


def test_math_verify_timeout_is_an_error_not_a_wrong_answer():
    # 9^(9^(9^9)) has ~10^(3.7e8) digits: SymPy cannot compare it with 3 before the alarm.
    impatient = make_math_verifier(timeout_s=1)
    start = time.monotonic()
    outcome = impatient(r"\boxed{9^{9^{9^{9}}}}", "3", {})
    assert outcome.status == ERROR and outcome.reason == "math-verify timeout while comparing"
    assert time.monotonic() - start < 2.0


def test_works_outside_the_main_thread():
    # signal.alarm is main-thread only; elsewhere math-verify runs without its timeout.
    outcomes = []
    thread = threading.Thread(
        target=lambda: outcomes.append(verify_math(r"\boxed{\frac{2}{4}}", "0.5", {}))
    )
    thread.start()
    thread.join()
    assert [o.status for o in outcomes] == [C]


def test_unparsable_gold_is_an_error_not_a_wrong_answer():
    outcome = verify_math(r"\boxed{3}", "", {})
    assert outcome.status == ERROR and "gold" in outcome.reason


def test_extraction_helpers():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{2}{3}} c") == r"\frac{2}{3}"
    assert last_boxed(r"\boxed{\{1,2\}}") == r"\{1,2\}"
    assert last_boxed(r"\boxed 5.") == "5"
    assert last_boxed(r"\fbox{7} and \framebox{8}") == "7, 8"
    assert last_boxed(r"x=\boxed{1} and y=\boxed{2}") == "2"  # "and y=" is not a separator
    assert last_boxed(r"\boxed{1} \boxed{2") is None  # a broken last box never revives \boxed{1}
    assert last_boxed("no box") is None
    assert answer_is("So the final answer is $x+1$. Done.") == "final answer is $x+1$"
    assert last_number("costs $1,234.50 total") == "1234.50"
    assert last_number("1" * 100) is None  # no 100-digit int conversions
    assert extract_answer("The answer is 7", ()) is None
    assert extract_answer(r"\boxed{7}") == ("boxed", "7")
