"""`make demo` takes PORT= as `make start_db` does, and the README says what `make test` costs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_demo_passes_port_to_the_demo():
    dry_run = subprocess.run(["make", "-n", "demo", "PORT=55999"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert re.search(r"run_demo\.py 55999$", dry_run.stdout, flags=re.MULTILINE), dry_run.stdout


def test_demo_refuses_a_port_that_is_not_a_number():
    result = subprocess.run([sys.executable, "demo/run_demo.py", "fivefour"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "usage:" in result.stderr and "PORT" in result.stderr


def test_readme_says_how_long_make_test_takes():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"make test .*~\d+ minutes", readme)
