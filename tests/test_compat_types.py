"""The types the drop-in module exposes present themselves as the stdlib's
do, under rawmux's own name: ``type(rawmux.poll())`` is ``rawmux.poll`` as
``type(select.poll())`` is ``select.poll``, and what CPython derives from a
type's name (``cannot create 'select.poll' instances``) is derived here too.
"""

import select as stdlib_select

import pytest

import rawmux


def exposed_types(module):
    """Every type ``module`` exposes: the classes in its namespace, and the
    type of what each of its functions returns when called without
    arguments (``poll()``)."""
    found = {}
    for name, value in vars(module).items():
        if isinstance(value, type):
            found[name] = value
        elif callable(value) and not name.startswith("_"):
            try:
                made = value()
            except TypeError:
                continue            # needs arguments: select()
            found[f"{name}()"] = type(made)
    return found


STDLIB_TYPES = exposed_types(stdlib_select)


def test_the_walk_finds_what_the_stdlib_exposes():
    # Guards the parametrisation below against silently testing less.
    assert {"error", "epoll", "poll()"} <= set(STDLIB_TYPES)


def counterpart(name):
    if name.endswith("()"):
        return type(getattr(rawmux, name[:-2])())
    return getattr(rawmux, name)


def instantiate(cls):
    """What ``cls()`` does: (exception type, message), or ("made", type
    name) when it makes an instance (closed at once)."""
    try:
        made = cls()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    close = getattr(made, "close", None)
    if close is not None:
        close()
    return "made", type(made).__qualname__


@pytest.mark.parametrize("name", sorted(STDLIB_TYPES))
def test_type_presents_itself_as_the_stdlib_one(name):
    want, got = STDLIB_TYPES[name], counterpart(name)
    assert got.__name__ == want.__name__
    assert got.__qualname__ == want.__qualname__
    module = "rawmux" if want.__module__ == "select" else want.__module__
    assert got.__module__ == module
    assert repr(got) == repr(want).replace("'select.", "'rawmux.")


@pytest.mark.parametrize("name", sorted(STDLIB_TYPES))
def test_instantiating_the_type_does_what_the_stdlib_does(name):
    want = instantiate(STDLIB_TYPES[name])
    got = instantiate(counterpart(name))
    assert got == tuple(v.replace("select.", "rawmux.") for v in want)


def test_poll_type_is_named_poll_in_rawmux():
    poller = rawmux.poll()
    assert repr(type(poller)) == "<class 'rawmux.poll'>"
    with pytest.raises(TypeError,
                       match=r"^cannot create 'rawmux\.poll' instances$"):
        type(poller)()

