"""Checks of constructor arguments at the boundary, with messages that name the argument.

A bad argument given to a constructor (``ActorSystem(clock="x")``,
``StateStore("state.db")``, ``start_single_timer(key, msg, delay="5")``) fails
where it is given, with a `TypeError` (not the kind of value expected) or a
`ValueError` (the right kind, out of range) that names the argument, what it
expects and what it got, instead of an `AttributeError` from deep inside
later. Used by the core and, through `actors._core`, by the services.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_count", "check_interface", "check_ref", "check_seconds"]


def _where(owner: str) -> str:
    return f"{owner}: " if owner else ""


def check_seconds(
    name: str, value: object, *, positive: bool = True, optional: bool = False, owner: str = ""
) -> float | None:
    """Return *value*, a number of seconds, as a float (None if *optional* and None).

    Args:
        name: the argument's name, for the message.
        value: what was given.
        positive: whether 0 is refused too (else only negatives are).
        optional: whether None is accepted.
        owner: what takes the argument (``"StateStore"``), for the message.

    Raises:
        TypeError: *value* is not an int or a float (a bool or a str is not).
        ValueError: *value* is negative (or 0 when *positive*), or NaN.
    """
    bound = "> 0" if positive else ">= 0"
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        none = " or None" if optional else ""
        msg = f"{_where(owner)}{name} must be a number of seconds ({bound}){none}, got {value!r}"
        raise TypeError(msg)
    seconds = float(value)
    if not (seconds > 0 if positive else seconds >= 0):  # NaN is refused too
        msg = f"{_where(owner)}{name} must be {bound} seconds, got {value!r}"
        raise ValueError(msg)
    return seconds


def check_count(name: str, value: object, *, minimum: int = 0, optional: bool = False, owner: str = "") -> int | None:
    """Return *value*, an int of at least *minimum* (None if *optional* and None).

    Raises:
        TypeError: *value* is not an int (a bool, a float or a str is not).
        ValueError: *value* is below *minimum*.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        none = " or None" if optional else ""
        msg = f"{_where(owner)}{name} must be an int >= {minimum}{none}, got {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{_where(owner)}{name} must be >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return value


def check_interface(
    name: str, value: Any, methods: tuple[str, ...], expects: str, *, owner: str = "", hint: str = ""
) -> Any:
    """Return *value* if it has every one of *methods* (callable), else raise.

    Args:
        name: the argument's name.
        value: what was given.
        methods: the methods it must have (``("now",)`` for a clock).
        expects: what it should be, for the message (``"a Clock"``).
        owner: what takes the argument.
        hint: what to do instead, appended to the message.

    Raises:
        TypeError: a method is missing: names the argument, what it expects,
            what it got and the first method it lacks.
    """
    missing = [method for method in methods if not callable(getattr(value, method, None))]
    if missing:
        msg = (
            f"{_where(owner)}{name} must be {expects}, got {type(value).__name__} {value!r} "
            f"(it has no {missing[0]}() method){'; ' + hint if hint else ''}"
        )
        raise TypeError(msg)
    return value


def check_ref(name: str, value: Any, *, optional: bool = False, owner: str = "") -> Any:
    """Return *value* if it is an actor ref (None too if *optional*), else raise `TypeError`."""
    if value is None and optional:
        return None
    if not (callable(getattr(value, "tell", None)) and callable(getattr(value, "ask", None))):
        none = " or None" if optional else ""
        got = f"{type(value).__name__} {value!r}"
        msg = f"{_where(owner)}{name} must be an ActorRef (what spawn returns){none}, got {got}"
        raise TypeError(msg)
    return value
