"""The code is clean by the project's own ruff configuration (pyproject.toml), so CI's test run is
also its lint gate: the README's one test command runs everything CI runs."""
import subprocess
import sys

from conftest import ROOT


def test_ruff_finds_nothing():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in out.stderr, "ruff is missing: pip install -e '.[test]'"
    assert out.returncode == 0, out.stdout + out.stderr
