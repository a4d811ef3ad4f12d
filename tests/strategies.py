"""Hypothesis strategies for troupe's message types, shared by the tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from actors.protocol import AgentMessage, MessageType, Priority

__all__ = [
    "agent_messages",
    "json_values",
    "message_types",
    "names",
    "priorities",
    "protocol_versions",
]


def names() -> st.SearchStrategy[str]:
    """Generate non-empty names (agent names, ids), Unicode included."""
    return st.text(min_size=1, max_size=20)


def message_types() -> st.SearchStrategy[MessageType]:
    """Generate every `MessageType`."""
    return st.sampled_from(MessageType)


def priorities() -> st.SearchStrategy[Priority]:
    """Generate every `Priority`."""
    return st.sampled_from(Priority)


def protocol_versions() -> st.SearchStrategy[str]:
    """Generate supported versions: major 1, any minor."""
    return st.integers(min_value=0, max_value=99).map(lambda minor: f"1.{minor}")


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Generate plain JSON values: nested dicts and lists, Unicode, finite floats."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
        max_leaves=max_leaves,
    )


@st.composite
def agent_messages(draw: st.DrawFn, *, content: st.SearchStrategy[Any] | None = None) -> AgentMessage:
    """Generate valid `AgentMessage`s, every field drawn.

    Args:
        draw: supplied by hypothesis.
        content: a strategy for the content; `json_values` by default.
    """
    return AgentMessage(
        message_id=draw(names()),
        sender=draw(names()),
        recipient=draw(st.none() | names()),
        type=draw(message_types()),
        content=draw(content if content is not None else json_values()),
        priority=draw(priorities()),
        timestamp=draw(st.floats(allow_nan=False, allow_infinity=False)),
        correlation_id=draw(st.none() | names()),
        protocol_version=draw(protocol_versions()),
    )
