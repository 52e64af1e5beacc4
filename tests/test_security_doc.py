"""docs/security.md's threat table: every row names at least one test, and every test it names
exists (the suite itself shows they pass)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)`")


def threat_rows() -> list[str]:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    table = text.split("## Threat table", 1)[1].split("\n## ", 1)[0]
    return [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| attack")]


def test_every_threat_row_names_a_test_that_exists() -> None:
    rows = threat_rows()
    assert len(rows) >= 15
    defined: dict[str, set[str]] = {}
    for row in rows:
        references = REFERENCE.findall(row)
        assert references, f"no test named in: {row[:80]}"
        for path, name in references:
            if path not in defined:
                tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
                defined[path] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in defined[path], f"{path}::{name} does not exist"
