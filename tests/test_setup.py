"""The README's two commands are what CI runs, and the set-up never installs into a system Python."""
import re

from conftest import ROOT


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_set_up_and_test_command_exactly():
    setup, tests = readme_commands()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert setup.split(" && ")[0] == "bash scripts/setup.sh" and "bash scripts/setup.sh" in ci
    assert tests in ci and tests.startswith(".venv/bin/python ")
    assert setup.split(" && ")[1].startswith(".venv/bin/python scripts/train.py")


def test_the_set_up_installs_into_the_project_environment_only():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--break-system-packages" not in script
    installs = [line for line in script.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and all('"$VENV/bin/python" -m pip install' in line for line in installs)
    assert "-m venv" in script and "python3-venv" in script
