"""Topic names and patterns, against a reference matcher (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.errors import TopicError
from actors.messaging import check_topic, compile_pattern


def reference_match(pattern: list[str], topic: list[str]) -> bool:
    """The definition: '*' is one segment, '**' zero or more, anything else itself."""
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return reference_match(rest, topic) or (bool(topic) and reference_match(pattern, topic[1:]))
    if not topic:
        return False
    return (head == "*" or head == topic[0]) and reference_match(rest, topic[1:])


segments = st.sampled_from(["a", "b", "tasks", "x-1", "s:9"])
topics = st.lists(segments, min_size=1, max_size=5)
patterns = st.lists(st.one_of(segments, st.just("*"), st.just("**")), min_size=1, max_size=5)


@given(patterns, topics)
def test_compiled_patterns_match_exactly_what_the_reference_matcher_matches(
    pattern: list[str], topic: list[str]
) -> None:
    assert compile_pattern(".".join(pattern)).matches(".".join(topic)) == reference_match(pattern, topic)


@given(topics)
def test_a_literal_pattern_matches_only_its_own_topic(topic: list[str]) -> None:
    name = ".".join(topic)
    compiled = compile_pattern(name)
    assert compiled.literal
    assert compiled.matches(name)
    assert not compiled.matches(name + ".more")


@pytest.mark.parametrize("bad", ["", "a..b", "a.", ".a", "a b", "a/b", "a.*", 3, None])
def test_malformed_topic_names_are_refused_naming_the_problem(bad: object) -> None:
    with pytest.raises(TopicError, match="topic name"):
        check_topic(bad)


@pytest.mark.parametrize("bad", ["", "a..*", "a*", "**b", "a.*x"])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="topic pattern"):
        compile_pattern(bad)
