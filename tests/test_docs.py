"""The README's contracts agree with the code: configuration table, quickstart, CI command."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.settings import Settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(COSMOS_[A-Z0-9_]+)` \|", README, re.M))
    assert documented == {f"COSMOS_{name.upper()}" for name in Settings.model_fields}


def test_quickstart_is_two_make_commands_and_ci_runs_the_same() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^    (make \w+)", quickstart, re.M)
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
