"""Key patterns: the globs that subscriptions and conflict strategies are keyed by.

A pattern is matched against the whole key, case-sensitively, with the
syntax of `fnmatch`: ``*`` matches any run of characters (``:`` included),
``?`` one character, ``[abc]`` / ``[a-z]`` one of a set and ``[!abc]`` one
outside it. ``analysis:*`` matches ``analysis:run-1`` and ``analysis:a:b``.

`fnmatch` takes an unclosed ``[`` as a literal; here it is refused, since it
is almost always a typo, as is the empty pattern.
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING

import attrs

from actors.errors import PatternError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Glob", "compile_glob"]

_WILDCARDS = frozenset("*?[")


@attrs.frozen
class Glob:
    """A compiled key pattern.

    Attributes:
        pattern: the pattern as given.
        literal: whether it has no wildcard (it matches one key, itself).
        prefix: the characters before its first wildcard: every key it
            matches starts with them.
        specificity: how many of its characters are not wildcards; of two
            patterns matching a key, the one with more is the more specific.
    """

    pattern: str
    literal: bool
    prefix: str
    specificity: int
    _match: Callable[[str], object] = attrs.field(repr=False, eq=False)

    def matches(self, key: str) -> bool:
        """Return whether `key` matches the pattern as a whole."""
        if self.literal:
            return key == self.pattern
        return self._match(key) is not None


def compile_glob(pattern: object) -> Glob:
    """Check and compile a key pattern.

    Raises:
        PatternError: `pattern` is not a non-empty str, or has an unclosed ``[``.
    """
    if not isinstance(pattern, str) or not pattern:
        msg = f"a key pattern must be a non-empty str such as 'analysis:*', got {pattern!r}"
        raise PatternError(msg)
    specificity = 0
    first_wildcard = None
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char in _WILDCARDS:
            if first_wildcard is None:
                first_wildcard = i
            if char == "[":
                # fnmatch's set syntax: an optional '!', then ']' may come first.
                j = i + 1
                if j < n and pattern[j] == "!":
                    j += 1
                if j < n and pattern[j] == "]":
                    j += 1
                while j < n and pattern[j] != "]":
                    j += 1
                if j >= n:
                    msg = (
                        f"key pattern {pattern!r} has an unclosed '[' at position {i}; "
                        "close the character set with ']' (or write '[[]' for a literal '[')"
                    )
                    raise PatternError(msg)
                i = j
        else:
            specificity += 1
        i += 1
    if first_wildcard is None:
        return Glob(pattern, True, pattern, specificity, pattern.__eq__)
    regex = re.compile(fnmatch.translate(pattern), re.DOTALL)
    return Glob(pattern, False, pattern[:first_wildcard], specificity, regex.match)
