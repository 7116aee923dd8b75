"""Layering: rollout/ never imports rlvr (the top layer) or rewards (a sibling); the sampling
plug-ins need nothing beyond numpy, torch and pydantic (no ray, vllm, deepspeed or transformers)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]


def imported_packages(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # includes imports inside functions
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_rollout_does_not_import_rlvr_or_rewards():
    bad = {
        str(p.relative_to(ROOT)): sorted(set(imported_packages(p)) & {"rlvr", "rewards"})
        for p in (ROOT / "rollout").rglob("*.py")
    }
    assert not {k: v for k, v in bad.items() if v}


PLUGINS = ["samplers", "schedules", "gates", "mopps", "dars"]
ALLOWED = {
    "__future__",
    "collections",
    "json",
    "math",
    "pathlib",
    "random",
    "typing",
    "numpy",
    "torch",
    "pydantic",  # their config sections
    "rollout",
}


def test_sampling_plugins_need_only_numpy_torch_and_pydantic():
    # read from the source (no subprocess): ray, vllm, deepspeed, transformers never appear
    used = {name: set(imported_packages(ROOT / "rollout" / f"{name}.py")) for name in PLUGINS}
    assert {name: pkgs - ALLOWED for name, pkgs in used.items() if pkgs - ALLOWED} == {}
