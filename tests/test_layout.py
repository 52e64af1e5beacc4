"""The layout's rules, held by the test command so they cannot drift one convenient import at a time:
the import contracts in pyproject.toml ([tool.importlinter]), hand-written modules of a readable
size, one definition of the roles, and every error reason in the one list (errors.proto)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vimark.client.errors import REASONS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "server", ROOT / "client")
MAX_LINES = 500


def hand_written() -> list[Path]:
    return [p for folder in SOURCES for p in folder.rglob("*.py") if "_pb2" not in p.name]


def test_import_contracts(tmp_path_factory: pytest.TempPathFactory) -> None:
    # import-linter reads the installed shape (vimark.client, vimark.server), as mypy does.
    shadow = tmp_path_factory.mktemp("layout")
    (shadow / "vimark").mkdir()
    for name in (ROOT / "protos" / "vimark").iterdir():
        (shadow / "vimark" / name.name).symlink_to(name)
    (shadow / "vimark" / "server").symlink_to(ROOT / "server")
    (shadow / "vimark" / "client").symlink_to(ROOT / "client")
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run(
        [sys.executable, "-c", lint, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=shadow,
        env={"PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


def test_no_hand_written_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in hand_written() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_role_is_defined_once_and_no_role_list_is_typed_again() -> None:
    defined = [
        p.relative_to(ROOT)
        for p in hand_written()
        if any(isinstance(n, ast.ClassDef) and n.name == "Role" for n in ast.walk(ast.parse(p.read_text())))
    ]
    assert defined == [Path("server/policy.py")]
    spelled = re.compile(r"""["']police["']\s*,\s*["']public["']""")
    assert [p for p in hand_written() if spelled.search(p.read_text())] == []


def test_every_error_reason_raised_is_in_errors_proto() -> None:
    """A reason given in code (reason=... or a class's reason = ...) is an ErrorReason name."""
    literal = re.compile(r"""\breason\s*=\s*["']([A-Z_]+)["']""")
    used = {m for p in hand_written() for m in literal.findall(p.read_text())}
    assert used and used <= REASONS, used - REASONS
