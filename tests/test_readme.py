"""The README's promises that code can check: its settings table, its commands, its Layout
and its table of test markers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_settings_table_lists_every_setting_and_only_those() -> None:
    documented = set(re.findall(r"^\| `TICKCAST_([A-Z_]+)` \|", README, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_the_two_commands_exist() -> None:
    assert "scripts/dev.sh serve" in README and "scripts/dev.sh test" in README
    dev = (ROOT / "scripts" / "dev.sh").read_text()
    assert "serve) setup" in dev and "test) setup" in dev
    assert "scripts/dev.sh test" in (ROOT / ".ci" / "run").read_text()


def layout() -> str:
    block = re.search(r"^## Layout\n+```\n(.*?)^```", README, flags=re.M | re.S)
    assert block, "the README has a Layout section with one code block"
    return block.group(1)


def test_the_layout_names_every_package_and_top_level_module() -> None:
    text = layout()
    app = ROOT / "app"
    packages = sorted(p.parent for p in app.rglob("__init__.py") if p.parent != app)
    missing = [str(p.relative_to(ROOT)) for p in packages if f"{p.name}/" not in text]
    missing += [p.name for p in sorted(app.glob("*.py")) if p.name != "__init__.py" and p.name not in text]
    assert not missing, f"the README's Layout does not mention {', '.join(missing)}"
    top = {p.name for p in app.iterdir() if (p / "__init__.py").exists()}
    assert all(f"app/{name}/" in text for name in top)


def test_the_markers_table_lists_the_registered_markers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":", 1)[0] for line in config["markers"]}
    table = re.search(r"^\| marker \| needs \|\n((?:\|.*\n)+)", README, flags=re.M)
    assert table, "the README has a table of test markers"
    documented = set(re.findall(r"^\| `(\w+)` \|", table.group(1), flags=re.M))
    assert documented == registered
