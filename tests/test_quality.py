"""The code-quality gates of the test command: generated code current, ruff, mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Installed names -> source folders (pyproject's package-dir); mypy needs the installed shape.
PACKAGE_LAYOUT = {
    "vimark": ROOT / "protos" / "vimark",
    "vimark/server": ROOT / "server",
    "vimark/client": ROOT / "client",
}


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_generated_code_is_current_with_protos() -> None:
    result = run(sys.executable, "protos/generate.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path_factory: pytest.TempPathFactory) -> None:
    shadow = tmp_path_factory.mktemp("typecheck")
    (shadow / "vimark").mkdir()
    for name in (ROOT / "protos" / "vimark").iterdir():
        (shadow / "vimark" / name.name).symlink_to(name)
    for installed, source in PACKAGE_LAYOUT.items():
        if installed != "vimark":
            (shadow / installed).symlink_to(source)
    result = run(
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        ROOT / "pyproject.toml",
        "--cache-dir",
        ROOT / ".mypy_cache",
        "-p",
        "vimark",
        cwd=shadow,
    )
    assert result.returncode == 0, result.stdout + result.stderr
