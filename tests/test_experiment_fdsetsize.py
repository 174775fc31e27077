"""fdsetsize: the verdict comes from what the stdlib, poll(2) and the kernel
answer on this machine, not from rawmux's own output."""

import errno
import resource
import select

import pytest

from rawmux import lib
from rawmux.experiments import fdsetsize
from rawmux.experiments.shape import conclude


@pytest.fixture(scope="module")
def result():
    return fdsetsize.run()


def test_libc_level_callers_refuse_as_the_stdlib_does(result):
    d = result.data
    assert d["high_fd"] >= lib.FD_SETSIZE
    with pytest.raises(ValueError) as stdlib:
        select.select([d["high_fd"]], [], [], 0)
    assert d["stdlib_refusal"] == f"ValueError: {stdlib.value}"
    assert d["compat_refusal"] == d["stdlib_refusal"]
    assert d["fd_set_refused"] and d["fd_set_untouched"]


def test_select_syscall_beyond_fd_setsize_agrees_with_poll(result):
    d = result.data
    polled = sorted(fd for fd, rev in d["poll_revents"].items()
                    if rev & lib.POLLIN)
    assert polled == [d["high_fd"]]            # the reference, from poll(2)
    assert d["select_ready"] == polled
    assert d["select_return"] == len(polled)
    assert d["idle_fd"] >= 4000 and d["select_nfds"] == d["idle_fd"] + 1


def test_where_the_kernel_draws_its_lines(result):
    d = result.data
    assert d["huge_select_return"] == 1
    assert d["huge_select_ready"] == [d["high_fd"]]
    assert d["poll_limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert d["poll_over_limit_return"] == -22        # EINVAL
    assert result.confirmed and "CONFIRMED" in result.report()


def test_rlimit_is_restored_and_bad_fd_refused():
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    fdsetsize.run(fd=1500)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
    with pytest.raises(ValueError,
                       match=f"fd: must be at least {lib.FD_SETSIZE + 1}"):
        fdsetsize.run(fd=lib.FD_SETSIZE)


def test_bitmap_never_writes_outside_itself():
    bitmap = fdsetsize.FdBitmap(100)
    bitmap.add(99)
    assert bitmap.members() == [99] and 99 in bitmap and 100 not in bitmap
    for fd in (100, 128, -1, 1 << 40):
        with pytest.raises(ValueError):
            bitmap.add(fd)
    with pytest.raises(IndexError):             # cffi's own check beneath
        bitmap.words[len(bitmap.words)] = 1
    assert bitmap.members() == [99]


# ---- the verdict, on synthetic data -----------------------------------------

def synthetic(**changes):
    """What the kernel answers as the claim says, with ``changes``."""
    high, idle = lib.FD_SETSIZE, 4000
    refusal = "ValueError: filedescriptor out of range in select()"
    data = dict(
        fd_setsize=lib.FD_SETSIZE, sizeof_fd_set=lib.FD_SETSIZE // 8,
        high_fd=high, idle_fd=idle, stdlib_refusal=refusal,
        compat_refusal=refusal, fd_set_refused=True, fd_set_untouched=True,
        select_nfds=idle + 1, select_return=1, select_ready=[high],
        poll_revents={high: lib.POLLIN, idle: 0}, huge_nfds=1 << 20,
        huge_select_return=1, huge_select_ready=[high], poll_limit=20000,
        poll_over_limit_return=-errno.EINVAL)
    data.update(changes)
    return data


def test_judged_confirmed_when_only_libc_refuses():
    result = conclude(fdsetsize, synthetic())
    assert result.confirmed is True
    assert "20,001 entries: EINVAL" in result.verdict
    assert result.data["high_fd"] == lib.FD_SETSIZE


@pytest.mark.parametrize("changes", [
    {"select_return": -errno.EBADF, "select_ready": []},   # kernel refuses
    {"compat_refusal": None},                    # rawmux accepted it
    {"fd_set_untouched": False},                 # the set was written
    {"select_ready": [lib.FD_SETSIZE, 4000]},    # disagrees with poll(2)
    {"huge_select_return": -errno.EINVAL},       # huge nfds refused
])
def test_judged_refuted_when_anything_differs(changes):
    result = conclude(fdsetsize, synthetic(**changes))
    assert result.confirmed is False
    assert "REFUTED" in result.report()
