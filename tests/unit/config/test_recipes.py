"""Every recipe under recipes/ (recursively) loads and validates, and its header says what it
trains, on what hardware, how long it takes, what to expect and how to launch it."""

import pathlib

import pytest

from rlvr.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[3]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_recipes_exist():
    assert len(RECIPES) >= 9, [str(p) for p in RECIPES]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.trainer.prompts_per_step >= 1


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_header(path):
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header, f"{path} must start with a comment header"
    for key in ("Hardware:", "Time:", "Expect", "Launch:"):
        assert key in text, f"{path}: header lacks {key!r}"
    # the launch line names this very file (catches headers copied from another recipe)
    assert f"rlvr train {path.relative_to(ROOT)}" in text
