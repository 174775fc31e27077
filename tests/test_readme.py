"""The README's two commands are the ones that really run."""

import os
import re
import shutil
import subprocess
import sys

import pytest

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
    # cwd elsewhere: the installed rawmux, as a user's program would see it.
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


def _python_shim(tmp_path):
    """A PATH on which ``python3`` is the interpreter running these tests,
    so that the README's commands are checked on every Python CI runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def fresh_clone(tmp_path):
    """A clone of this repository holding what a commit of the working tree
    would hold: the tracked and new files as they are now, without the
    ignored ones (a build, a venv)."""
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "rawmux"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", ROOT,
                    str(clone)], check=True, timeout=120)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], cwd=ROOT, capture_output=True, check=True,
        timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = os.path.join(ROOT, name), clone / name
        if os.path.isfile(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():               # deleted in the working tree
            target.unlink()
    return clone


def at_root(clone, command, path, timeout=120, **kwargs):
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = path
    return subprocess.run(command, cwd=clone, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.mark.slow
def test_main_command_verbatim_from_the_root_of_a_fresh_clone(tmp_path):
    """The README's main command, as a newcomer types it: in a fresh clone,
    from its root, with a fresh venv; then what they would type next."""
    main_job, _ = readme_commands()
    clone, path = fresh_clone(tmp_path), _python_shim(tmp_path)
    run = at_root(clone, ["bash", "-c", main_job], path, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all checks passed" in run.stdout

    python = str(clone / ".venv" / "bin" / "python")
    # At the root the source tree's rawmux/ comes first on sys.path, and
    # finds the extension the install built.
    run = at_root(clone, [python, "-c", "import rawmux; "
                          "print(rawmux.__file__, rawmux.lib.FD_SETSIZE)"],
                  path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(clone / "rawmux" / "__init__.py"),
                                  "1024"]
    repl = at_root(clone, [python, "-i", "-q"], path,
                   input="import rawmux\nprint(rawmux.poll().poll(0))\n")
    assert repl.returncode == 0 and "[]" in repl.stdout, repl.stderr
    run = at_root(clone, [python, "-m", "rawmux", "--version"], path)
    assert run.returncode == 0 and run.stdout.startswith("rawmux "), \
        run.stderr

    # Edit csrc/: the stale extension is refused with the command that
    # rebuilds, and that command works.
    with open(clone / "csrc" / "rawmux_poll.h", "a") as f:
        f.write("/* an edit */\n")
    run = at_root(clone, [python, "-c", "import rawmux"], path)
    assert run.returncode != 0
    assert "ModuleNotFoundError" not in run.stderr
    message = run.stderr.strip().splitlines()
    assert "was built from other sources" in message[-2], run.stderr
    rebuild = message[-1].strip()
    assert rebuild == f"{python} -m pip install ."
    run = at_root(clone, ["bash", "-c", rebuild], path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    run = at_root(clone, [python, "-c", "import rawmux"], path)
    assert run.returncode == 0, run.stderr


def test_python_at_the_root_imports_the_source_tree_with_its_extension():
    """``python -c`` and ``python -m pytest`` at the root: cwd first on
    sys.path, the source tree's rawmux/ imported, the installed extension
    found (or, if csrc/ changed since the install, a clear refusal)."""
    run = subprocess.run(
        [sys.executable, "-c", "import rawmux; print(rawmux.__file__)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == os.path.join(ROOT, "rawmux", "__init__.py")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q",
         "-p", "no:cacheprovider", "tests/test_build.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_without_the_extension_the_message_says_what_to_run(tmp_path):
    """A source tree and a Python without site-packages (-S) or PYTHONPATH,
    so without the extension: an ImportError that names the command to run,
    not a bare ModuleNotFoundError."""
    for part in ("setup.py", os.path.join("csrc", "digest.py")):
        (tmp_path / part).parent.mkdir(exist_ok=True)
        shutil.copy(os.path.join(ROOT, part), tmp_path / part)
    shutil.copytree(os.path.join(ROOT, "rawmux"), tmp_path / "rawmux",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-S", "-c", "import rawmux"],
                         cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()
    assert last[-2].startswith("ImportError: rawmux's C extension (_rawmux) "
                               "is not built for this Python"), run.stderr
    assert last[-1].strip() == f"{sys.executable} -m pip install ."
    assert "ModuleNotFoundError" not in run.stderr
