r"""Topic names and the glob patterns subscriptions are keyed by.

A topic name is one or more dot-separated segments, each of letters, digits,
``_``, ``-`` or ``:`` (``tasks.review``, ``session:42.chat``). A pattern has
the same shape, and a segment may also be a wildcard:

- ``*`` matches exactly one segment: ``tasks.*`` matches ``tasks.review``,
  not ``tasks`` nor ``tasks.review.urgent``;
- ``**`` matches zero or more segments: ``tasks.**`` matches ``tasks``,
  ``tasks.review`` and ``tasks.review.urgent``; ``**`` alone matches every
  topic.

Matching is case-sensitive and covers the whole name. A pattern is compiled
once, to a regular expression over the name with a dot in front of every
segment (``.tasks.review``), so ``**`` is ``(?:\.[^.]+)*``.
"""

from __future__ import annotations

import re

import attrs

from actors.errors import TopicError

__all__ = ["TopicPattern", "check_topic", "compile_pattern"]

_SEGMENT = re.compile(r"[A-Za-z0-9_:\-]+")


def _problem(name: object, *, wildcards: bool) -> str | None:
    if not isinstance(name, str):
        return f"must be a str, got {type(name).__name__} {name!r}"
    if not name:
        return "is empty"
    for position, segment in enumerate(name.split(".")):
        if wildcards and segment in ("*", "**"):
            continue
        if not segment:
            return f"has an empty segment at position {position} (two dots, or a dot at an end)"
        if _SEGMENT.fullmatch(segment) is None:
            allowed = "letters, digits, '_', '-' or ':'" + (", or a whole-segment '*' / '**'" if wildcards else "")
            return f"has segment {segment!r}, which may hold only {allowed}"
    return None


def check_topic(name: object) -> str:
    """Return `name` if it is a valid topic name (no wildcards).

    Raises:
        TopicError: it is not a str, is empty, or has a malformed segment.
    """
    problem = _problem(name, wildcards=False)
    if problem is not None:
        msg = f"topic name {name!r} {problem}; use dot-separated segments such as 'tasks.review'"
        raise TopicError(msg)
    return name  # type: ignore[return-value]


@attrs.frozen
class TopicPattern:
    """A compiled subscription pattern.

    Attributes:
        pattern: the pattern as given.
        literal: whether it has no wildcard (it matches exactly one topic, itself).
    """

    pattern: str
    literal: bool
    _regex: re.Pattern[str] | None = attrs.field(repr=False, eq=False)

    def matches(self, topic: str) -> bool:
        """Return whether `topic` matches the pattern as a whole."""
        if self._regex is None:
            return topic == self.pattern
        return self._regex.fullmatch("." + topic) is not None


def compile_pattern(pattern: object) -> TopicPattern:
    """Check and compile a subscription pattern.

    Raises:
        TopicError: it is not a str, is empty, or has a malformed segment.
    """
    problem = _problem(pattern, wildcards=True)
    if problem is not None:
        msg = f"topic pattern {pattern!r} {problem}; use segments such as 'tasks.*' or 'tasks.**'"
        raise TopicError(msg)
    assert isinstance(pattern, str)  # noqa: S101 - _problem checked it
    segments = pattern.split(".")
    if not any(s in ("*", "**") for s in segments):
        return TopicPattern(pattern, literal=True, regex=None)
    parts = []
    for segment in segments:
        if segment == "*":
            parts.append(r"\.[^.]+")
        elif segment == "**":
            parts.append(r"(?:\.[^.]+)*")
        else:
            parts.append(r"\." + re.escape(segment))
    return TopicPattern(pattern, literal=False, regex=re.compile("".join(parts)))
