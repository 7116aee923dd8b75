"""Helpers shared by the rewards tests: where the test plug-ins live, and installing a plug-in
package the way pip leaves it (a *.dist-info with entry_points.txt) without running pip."""

import re
from pathlib import Path

from rewards.registry import ENTRY_POINT_GROUP

REPO = Path(__file__).resolve().parents[3]
PLUGINS = REPO / "tests" / "plugins"
EXAMPLE = PLUGINS / "rlvr_example_verifier"


def install_dist_info(site: Path, name: str, entry_points: dict[str, str]) -> None:
    dist = site / f"{name}-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


def example_entry_points() -> dict[str, str]:
    """The entry points the example package declares in its own pyproject.toml (read by hand:
    tomllib is not in Python 3.10)."""
    section = f'[project.entry-points."{ENTRY_POINT_GROUP}"]'
    text = (EXAMPLE / "pyproject.toml").read_text()
    body = text.split(section, 1)[1].split("\n[", 1)[0]
    points = dict(re.findall(r'^(\w+)\s*=\s*"([^"]+)"', body, re.MULTILINE))
    assert points, "the example pyproject declares no verifier entry point"
    return points


def install_example(site: Path) -> list[Path]:
    """Install the example plug-in under `site`; returns the paths to put on sys.path."""
    install_dist_info(site, "rlvr_example_verifier", example_entry_points())
    return [site, EXAMPLE]
