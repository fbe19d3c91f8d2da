"""What every exercise check shares: the error type, "not attempted yet", comparisons that
name the mistake.

A check takes the learner's answer (a function, or the numbers they predicted) and either
prints ``Exercise N: correct ...``, prints ``Exercise N: not attempted yet`` (the answer is still
``None`` or the skeleton's ``raise NotImplementedError``), or raises :class:`ExerciseError` with
a message that says what is off. It returns nothing, so a check cell shows only that line.
Where a likely mistake can be recognised (a missing scale, a softmax over the wrong axis, a
forgotten residual), the check computes that wrong answer too and, when the learner's output
matches it, says so by name.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = ["NOT_ATTEMPTED", "TIME_LIMIT_S", "ExerciseError", "attempt",
           "attempt_without_calling", "calls_any", "expect_close", "expect_number", "keeps_rng",
           "not_attempted"]


class ExerciseError(AssertionError):
    """An answer is wrong; the message says what is off (and, where it can tell, which mistake).

    A subclass of ``AssertionError`` so that a notebook's check cell stops like an ``assert``
    would, but never a bare one: every instance carries a sentence for the learner.
    """


class _NotAttempted:
    def __repr__(self) -> str:
        return "NOT_ATTEMPTED"


#: returned by :func:`attempt` when the learner has not written the answer yet
NOT_ATTEMPTED = _NotAttempted()


def keeps_rng(check: Callable) -> Callable:
    """Run ``check`` with its own random state: a check seeds torch for its probes, and the
    learner's notebook must draw the same numbers after it as before."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapper


def not_attempted(label: str) -> None:
    print(f"{label}: not attempted yet (fill in the cell above, then run this check again)")


#: seconds a learner's function may run inside a check before it is stopped as an endless loop
#: (a module constant, so that the tests can lower it)
TIME_LIMIT_S = 60.0


class _TimeUp(BaseException):
    """Raised by the alarm inside the learner's code: a ``BaseException``, so that their own
    ``except Exception`` does not swallow it."""


_LIBRARY_DIRS = tuple(str(p) for p in (Path(__file__).resolve().parents[1],
                                        Path(inspect.getfile(contextlib)).resolve().parent))


def _learners(code: types.CodeType) -> bool:
    """Whether ``code`` is the learner's (a notebook cell, a script, a test), not swiftlearn's,
    the standard library's or an installed package's: only the learner's code is watched."""
    name = code.co_filename
    return not (name.startswith(_LIBRARY_DIRS) or "site-packages" in name
                or name.startswith("<frozen"))


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise :class:`_TimeUp` in the learner's code once ``seconds`` have passed.

    A trace function on the learner's own frames (their code alone: the library, torch and the
    standard library run untraced, at full speed) looks at the clock on every line, so even
    ``while True: pass`` stops, on any thread, and Ctrl-C works as always. No signal: a
    SIGALRM timer, the first way this was done, crashed the process once OpenVINO's and NNCF's
    native code had run in it (a signal delivered while the main thread waited for the GIL).
    Code that never returns from inside one C call (one huge tensor op) is not interrupted.
    """
    if not seconds:
        yield
        return
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()

    def local(frame, event, arg):
        if event == "line" and time.monotonic() > deadline:
            raise _TimeUp
        return local

    def calls(frame, event, arg):
        return local if _learners(frame.f_code) else None

    sys.settrace(calls)
    try:
        yield
    finally:
        sys.settrace(previous)


@contextlib.contextmanager
def _watching(codes: frozenset[types.CodeType]):
    """Yield a list that records every call into a function whose code is in ``codes``.

    A profile hook sees the code object start to run however it was reached: ``module(x)``,
    ``module.forward(x)``, ``type(module).forward(module, x)``, a deep copy, a fresh instance
    with the same weights, ``module._call_impl(x)``, a subclass's ``super().forward``, a
    reference saved before the check. A forward hook or a patched class attribute each miss
    some of these; nothing else is slowed down but the learner's own call."""
    calls: list[str] = []
    if not codes:
        yield calls
        return

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            calls.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def _snapshot(value):
    """A copy of a tensor or array argument, to tell afterwards whether it was changed."""
    if isinstance(value, torch.Tensor) and value.device.type != "meta":
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return None


def _unchanged(now, before) -> bool:
    """``now`` still equals its snapshot ``before`` (a nan where there was one is no change)."""
    if isinstance(now, np.ndarray):
        return np.array_equal(now, before, equal_nan=now.dtype.kind in "fc")
    now = now.detach()
    return now.shape == before.shape and bool(
        ((now == before) | (now.isnan() & before.isnan())).all())


def attempt(fn: Callable, *args, **kwargs):
    """Call the learner's ``fn``; :data:`NOT_ATTEMPTED` if it returns ``None`` or raises
    ``NotImplementedError`` (the skeleton), its result otherwise.

    Whatever else goes wrong in the learner's code is one :class:`ExerciseError` that says
    what happened: a crash, a run past :data:`TIME_LIMIT_S` (an endless loop), ``sys.exit()``,
    or an answer that changed its input tensors in place (the check compares with those
    inputs afterwards, so the maths would be blamed). Ctrl-C still stops the check."""
    return _attempt(fn, args, kwargs)


def _attempt(fn: Callable, args: tuple, kwargs: dict,
             refuse: tuple[frozenset[types.CodeType], str] = (frozenset(), "")):
    """:func:`attempt`; ``refuse`` is (code objects, message): an ExerciseError with that
    message if the learner's code ran any of them."""
    if not callable(fn):
        raise ExerciseError(f"expected a function, got {type(fn).__name__}: define it with `def`")
    name = f"your `{getattr(fn, '__name__', 'function')}`"
    inputs = [(v, s) for v in (*args, *kwargs.values()) if (s := _snapshot(v)) is not None]
    codes, message = refuse
    try:
        with _watching(codes) as calls, _time_limit(TIME_LIMIT_S):
            out = fn(*args, **kwargs)
    except NotImplementedError:
        return NOT_ATTEMPTED
    except _TimeUp:
        raise ExerciseError(f"{name} ran longer than {TIME_LIMIT_S:g} s and was stopped, "
                            "probably an endless loop (a `while` whose condition never "
                            "becomes false?)") from None
    except SystemExit as error:
        raise ExerciseError(f"{name} called sys.exit() / exit(), which would stop the "
                            "notebook; return the answer instead") from error
    except Exception as error:  # the learner's code crashed: say so in one line, keep the cause
        raise ExerciseError(f"{name} raised {type(error).__name__}: {error}") from error
    if out is None:
        return NOT_ATTEMPTED
    if calls:
        raise ExerciseError(message)
    if not all(_unchanged(v, before) for v, before in inputs):
        raise ExerciseError(f"{name} changed its input (an in-place op such as x += ..., "
                            "x[...] = ... or x.mul_(...)); work on a copy (x = x.clone()) or "
                            "use out-of-place ops (x = x + ...)")
    return out


def _forward_codes(module: torch.nn.Module) -> frozenset[types.CodeType]:
    """The code of ``module``'s forward: its class's (shared with every instance, copy and
    subclass that keeps it) and an instance-level ``forward`` if one was set."""
    codes = set()
    for f in (type(module).forward, vars(module).get("forward")):
        code = getattr(inspect.unwrap(getattr(f, "__func__", f)), "__code__", None)
        if code is not None:
            codes.add(code)
    return frozenset(codes)


def attempt_without_calling(fn: Callable, module: torch.nn.Module, x: torch.Tensor, *,
                            label: str, what: str, parts: str):
    """``attempt(fn, x, module)`` under ``no_grad``: an ExerciseError if the learner's code
    runs ``module``'s forward (``what``) in any way (see :func:`_watching`) instead of writing
    it from its ``parts``. The parts themselves (``nn.Linear`` layers, ``F.*``, a block's
    attention) have other code and stay allowed; the check's own reference runs outside."""
    message = (f"{label}: your function calls the {what} itself (`{what}(x)`); write it from "
               f"{parts}")
    with torch.no_grad():
        return _attempt(fn, (x, module), {}, (_forward_codes(module), message))


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def calls_any(fn: Callable, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that ``fn``'s code (nested functions included) refers to."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    used = _code_names(code)
    return sorted(n for n in names if n in used)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol,
                                                      rtol=rtol))


def expect_close(got, expected: torch.Tensor, what: str,
                 mistakes: Mapping[str, torch.Tensor] | None = None,
                 atol: float = 1e-5, rtol: float = 1e-4, hint: str = "") -> None:
    """Raise :class:`ExerciseError` unless ``got`` equals ``expected``; name the mistake when
    ``got`` equals one of the known wrong answers in ``mistakes`` (message -> wrong tensor)."""
    if isinstance(got, tuple) and not isinstance(expected, tuple):
        raise ExerciseError(f"{what}: return one tensor, not a tuple of {len(got)}")
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    got = got.detach()
    if got.shape != expected.shape:
        raise ExerciseError(f"{what} has shape {tuple(got.shape)}, expected "
                            f"{tuple(expected.shape)}")
    if not torch.isfinite(got).all():
        raise ExerciseError(f"{what} contains nan or inf values; the expected values are all "
                            "finite")
    if _close(got, expected, atol, rtol):
        return
    for message, wrong in (mistakes or {}).items():
        if _close(got, wrong.detach(), atol, rtol):
            raise ExerciseError(f"{what} is off: {message}")
    diff = (got.double() - expected.double()).abs().max().item()
    raise ExerciseError(f"{what} is off by up to {diff:.3g} (largest |difference| from the "
                        f"library's values)" + (f"; {hint}" if hint else ""))


def expect_number(got, expected: float, what: str,
                  mistakes: Mapping[str, float] | None = None, rel: float = 1e-9,
                  hint: str = "") -> None:
    """Like :func:`expect_close` for one number: ``got`` within a relative ``rel`` of
    ``expected``, else the named mistake it matches, else by how much it is off."""
    try:
        value = float(got)
    except (TypeError, ValueError):
        raise ExerciseError(f"{what}: expected a number, got {type(got).__name__}") from None

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= rel * max(abs(b), 1e-300) or a == b

    if close(value, expected):
        return
    for message, wrong in (mistakes or {}).items():
        if close(value, wrong):
            raise ExerciseError(f"{what} = {value:.6g} is off: {message}")
    raise ExerciseError(f"{what} = {value:.6g}, expected {expected:.6g}"
                        + (f"; {hint}" if hint else ""))
