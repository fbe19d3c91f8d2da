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

import functools
import types
from collections.abc import Callable, Iterable, Mapping

import torch

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "attempt", "calls_any", "expect_close",
           "expect_number", "keeps_rng", "not_attempted"]


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


def attempt(fn: Callable, *args, **kwargs):
    """Call the learner's ``fn``; :data:`NOT_ATTEMPTED` if it returns ``None`` or raises
    ``NotImplementedError`` (the skeleton), its result otherwise."""
    if not callable(fn):
        raise ExerciseError(f"expected a function, got {type(fn).__name__}: define it with `def`")
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        return NOT_ATTEMPTED
    except Exception as error:  # the learner's code crashed: say so in one line, keep the cause
        raise ExerciseError(f"your `{getattr(fn, '__name__', 'function')}` raised "
                            f"{type(error).__name__}: {error}") from error
    return NOT_ATTEMPTED if out is None else out


def attempt_without_calling(fn: Callable, module: torch.nn.Module, x: torch.Tensor, *,
                            label: str, what: str, parts: str):
    """``attempt(fn, x, module)`` under ``no_grad``, with a forward hook on ``module``: an
    ExerciseError if the learner's code just calls ``module`` (``what``) instead of writing it
    from its ``parts``."""
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            out = attempt(fn, x, module)
    finally:
        handle.remove()
    if out is not NOT_ATTEMPTED and calls:
        raise ExerciseError(f"{label}: your function calls the {what} itself (`{what}(x)`); "
                            f"write it from {parts}")
    return out


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
