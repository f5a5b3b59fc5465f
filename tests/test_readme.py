"""The README's promises that code can check: its settings table and its commands."""

from __future__ import annotations

import re
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
