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


def test_tour_passes_every_check(tmp_path):
    # cwd elsewhere: "-m" puts the cwd first on sys.path, and the source tree
    # holds no compiled extension.
    run = subprocess.run([sys.executable, "-m", "rawmux", "tour"],
                         capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all checks passed" in run.stdout
    # Every binding family and every echo backend took part.
    from rawmux import tour
    from rawmux.echo import BACKENDS
    for family, *_ in tour.FAMILIES:
        assert f"bindings: {family}" in run.stdout
    for backend in BACKENDS:
        assert f"echo server: {backend}" in run.stdout
