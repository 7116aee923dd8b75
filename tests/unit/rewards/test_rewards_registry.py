"""The verifier contract, the registry, plug-in loading (entry points and module:function), and
the layering rule that rewards/ imports neither torch nor Ray."""

import ast
import math
import subprocess
import sys

import pytest
from rewards_support import PLUGINS, REPO, install_dist_info, install_example

from rewards import registry
from rewards.base import CORRECT, ERROR, INCORRECT, Outcome, call_verifier, checked
from rewards.registry import get_verifier, load_plugin, register, verifier_names


@pytest.fixture
def clean_registry(monkeypatch):
    """Registry and sys.path as they were: plug-ins registered by a test do not leak out."""
    saved = dict(registry._REGISTRY)
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_outcome_contract():
    assert Outcome.correct() == Outcome(CORRECT, 1.0, "")
    assert Outcome.incorrect(reason="x") == Outcome(INCORRECT, 0.0, "x")
    error = Outcome.error("boom")
    assert error.is_error and math.isnan(error.score) and error.reason == "boom"


def test_checked_turns_plugin_bugs_into_errors():
    assert checked(True).status == ERROR and "bool" in checked(True).reason
    assert checked(Outcome("maybe", 1.0)).status == ERROR
    assert checked(Outcome(CORRECT, math.inf)).status == ERROR
    assert checked(Outcome(INCORRECT, 0.0, "r" * 10_000)).reason == "r" * 200
    assert checked(Outcome(CORRECT, 0.5)) == Outcome(CORRECT, 0.5)  # partial credit is fine


def test_call_verifier_never_raises():
    def bad(completion, gold, row):
        raise ZeroDivisionError("x" * 10_000)

    outcome = call_verifier(bad, "c", "g", {})
    assert outcome.status == ERROR and outcome.reason.startswith("ZeroDivisionError: x")
    assert len(outcome.reason) == 200


def test_builtins_are_registered():
    assert {"arith", "math", "math_boxed", "countdown"} <= set(verifier_names())
    assert get_verifier("arith")("46", "46", {}).status == CORRECT
    assert get_verifier("arith")("46.0", "46", {}).status == INCORRECT


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown verifier 'nope'; valid: .*arith.*math"):
        get_verifier("nope")


def test_duplicate_registration_is_an_error(clean_registry):
    register("dup_test")(lambda c, g, r: Outcome.correct())
    with pytest.raises(ValueError, match="'dup_test' is already registered"):
        register("dup_test")(lambda c, g, r: Outcome.incorrect())
    with pytest.raises(ValueError, match="'math' is already registered"):
        load_plugin("math=hostile_verifiers:echo")


def test_load_plugin_paths(clean_registry):
    assert load_plugin("hostile_verifiers:echo") == "echo"
    assert load_plugin("mirror = hostile_verifiers:echo") == "mirror"
    assert get_verifier("mirror")("a", "a", {}).status == CORRECT
    assert load_plugin("hostile_verifiers:echo") == "echo"  # the same function again is fine
    for bad in ("hostile_verifiers", "hostile_verifiers:", "=x:y", ":echo"):
        with pytest.raises(ValueError, match="module:function"):
            load_plugin(bad)
    with pytest.raises(ModuleNotFoundError):
        load_plugin("no_such_module_xyz:f")
    with pytest.raises(AttributeError):
        load_plugin("hostile_verifiers:no_such_function")


def test_entry_point_plugin_package(clean_registry, monkeypatch, tmp_path):
    for path in install_example(tmp_path):
        monkeypatch.syspath_prepend(str(path))
    assert "multiple_choice" in verifier_names()
    assert "multiple_choice" not in registry._REGISTRY  # listed, but loaded only when asked for
    verify = get_verifier("multiple_choice")
    assert verify.__module__ == "rlvr_example_verifier"
    assert verify("Answer: (C)", "C", {}).status == CORRECT
    assert verify(r"so \boxed{B}", "C", {}).status == INCORRECT
    assert verify("Answer: F", "C", {"choices": ["a", "b", "c", "d"]}).reason == "F is not a choice"
    assert verify("I cannot tell.", "C", {}).reason == "no answer"
    assert verify("Answer: C", "Z", {}).status == ERROR


def test_entry_point_clashes_are_errors(clean_registry, monkeypatch, tmp_path):
    install_dist_info(tmp_path / "a", "plugin_a", {"clash": "hostile_verifiers:echo"})
    install_dist_info(tmp_path / "b", "plugin_b", {"clash": "hostile_verifiers:raises"})
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    assert "clash" in verifier_names()
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    with pytest.raises(ValueError, match="'clash' is declared by two installed plug-ins"):
        verifier_names()


def test_entry_point_may_not_shadow_a_builtin(clean_registry, monkeypatch, tmp_path):
    install_dist_info(tmp_path, "plugin_c", {"math": "hostile_verifiers:echo"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="built-in verifier name 'math'"):
        get_verifier("countdown_typo")


def test_broken_entry_point_names_itself(clean_registry, monkeypatch, tmp_path):
    install_dist_info(tmp_path, "plugin_d", {"broken": "no_such_module_xyz:f"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_verifier("math")  # other verifiers still work
    with pytest.raises(ImportError, match="'broken' .*no_such_module_xyz:f.* failed to load"):
        get_verifier("broken")


FORBIDDEN = {"torch", "ray", "transformers", "vllm", "deepspeed", "rlvr", "rollout", "kernels"}


def test_rewards_imports_no_torch_ray_or_upper_layers_by_reading_imports():
    for path in sorted((REPO / "rewards").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "ray", "transformers", "vllm", "deepspeed"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import pkgutil, rewards
for m in pkgutil.iter_modules(rewards.__path__):
    __import__("rewards." + m.name)
from rewards import VerifierPool, VerifyRequest
from rewards.pool import PoolConfig
with VerifierPool(PoolConfig(num_workers=0)) as pool:
    out = pool.verify_batch([VerifyRequest("math", "\\\\boxed{1/2}", "0.5", {}),
                             VerifyRequest("arith", "4", "4", {}),
                             VerifyRequest("countdown", "<answer>2*3</answer>", "6",
                                           {"numbers": [2, 3]})])
print(",".join(o.status for o in out))
"""


def test_rewards_runs_with_torch_and_ray_blocked():
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "correct,correct,correct"
