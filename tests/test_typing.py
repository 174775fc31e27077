"""The package's annotations, checked by mypy as a user's checker sees them.

Two runs, with pyproject.toml's [tool.mypy] configuration: one over the whole
package, one in strict mode over tests/typed_example.py, which calls every
public API (an unannotated one is an error there) and holds rawmux's drop-in
signatures against typeshed's for the stdlib ``select`` module.  Both check
the rawmux this suite imports: the source tree's when run from it, or else
the installed one, which mypy reads only because of its py.typed marker.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import rawmux

pytest.importorskip("mypy", reason="mypy is not installed: it comes with the "
                    "test extra, pip install 'rawmux[test]'")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(rawmux.__file__).resolve().parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mypy cache for both runs: the second then reads typeshed's stdlib
    from it instead of analysing it again (~2 s).  mypy's incremental mode
    rechecks whatever the other run's options invalidate, and reports the
    same errors as a cold run."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(tmp_path, cache, *args):
    """mypy on args, from where it finds the rawmux under test; fails the
    test with mypy's report unless mypy is satisfied."""
    # mypy looks in its working directory first: the source tree's root,
    # or an empty one, so that it finds the installed package.
    cwd = ROOT if PACKAGE.parent == ROOT else tmp_path
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file",
         str(ROOT / "pyproject.toml"), "--cache-dir", str(cache),
         *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, \
        f"mypy {' '.join(args)}:\n{run.stdout}{run.stderr}"


def test_package_type_checks(tmp_path, cache):
    mypy(tmp_path, cache, "-p", "rawmux")


def test_typed_example_type_checks_strictly(tmp_path, cache):
    mypy(tmp_path, cache, "--strict", "--enable-error-code", "deprecated",
         "--follow-imports", "silent",
         str(ROOT / "tests" / "typed_example.py"))
