"""The README's two commands are the ones that really run."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines()
            if line and not line.startswith("#")]


def test_readme_gives_two_commands_and_ci_runs_the_test_one_verbatim():
    main_job, tests = readme_commands()
    assert "python -m rawmux" in main_job
    assert "pytest" in tests
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read().splitlines()
    assert tests in ci


def test_demo_agrees_with_stdlib(tmp_path):
    # cwd elsewhere: "-m" puts the cwd first on sys.path, and the source tree
    # holds no compiled extension.
    run = subprocess.run([sys.executable, "-m", "rawmux", "demo"],
                         capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "all three bindings agree" in run.stdout
    assert run.stdout.count("same") == 4
