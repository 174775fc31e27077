"""The suite again, against an AddressSanitizer build of the extension.

No input reachable from Python may make the C code read or write outside a
buffer; ASan turns any such access the tests provoke into a failure (it found
a use-after-free in PollArray's growth path before this test existed).  The
extension is rebuilt in a scratch copy with RAWMUX_SANITIZE=address, and the
interpreter, which is not instrumented, runs with libasan preloaded (the
README's "Checking memory safety" recipe).

Every test that hands the C floor inputs of its own reruns.  Left out are
the files whose tests reach the C floor only through calls the rest already
make, with more time rather than other inputs (load, latency and timing
experiments, the command line, the bench, the build and the docs): under
ASan they took two thirds of the rerun's six minutes.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_RERUN = {
    "test_bench.py", "test_build.py", "test_cli.py", "test_echo_limits.py",
    "test_echo_threads.py", "test_experiment_all.py",
    "test_experiment_dead_connections.py", "test_experiment_scaling.py",
    "test_experiment_slow_handler.py", "test_experiment_syscalls.py",
    "test_readme.py", "test_sanitizer.py", "test_tour.py", "test_typing.py",
}


def rerun_files():
    names = sorted(n for n in os.listdir(os.path.join(ROOT, "tests"))
                   if n.startswith("test_") and n.endswith(".py"))
    assert NOT_RERUN <= set(names), NOT_RERUN - set(names)
    return [os.path.join("tests", n) for n in names if n not in NOT_RERUN]


def libasan():
    try:
        path = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                              capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.slow
def test_suite_passes_under_address_sanitizer(tmp_path):
    asan = libasan()
    if asan is None:
        pytest.skip("gcc's libasan.so not found")
    for part in ("csrc", "rawmux", "tests", ".ci", "benchmarks"):
        shutil.copytree(os.path.join(ROOT, part), tmp_path / part,
                        ignore=shutil.ignore_patterns("*.so", "*.o",
                                                      "_rawmux.c", "build",
                                                      "__pycache__"))
    for name in ("README.md", "pyproject.toml", "setup.py"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    env = dict(os.environ, RAWMUX_SANITIZE="address", RAWMUX_WERROR="1")
    subprocess.run([sys.executable, "csrc/build.py"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=300)
    env.update(PYTHONPATH=str(tmp_path), LD_PRELOAD=asan,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               RAWMUX_UNDER_ASAN="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow",
         "-p", "no:cacheprovider", *rerun_files()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The scratch builds, the cffi module and the C-API one, really are
    # instrumented.
    built = sorted(so.name.split(".")[0] for so in tmp_path.glob("_rawmux*.so"))
    assert built == ["_rawmux", "_rawmux_compat"]
    for so in tmp_path.glob("_rawmux*.so"):
        assert b"__asan" in so.read_bytes(), so
