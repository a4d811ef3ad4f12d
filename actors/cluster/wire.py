"""The cluster wire format: frames of batched items between two nodes, versioned.

A frame is what one transport call carries from one node to another: a header
(protocol version, sender node and incarnation, destination, sequence number,
cumulative ack) and the items of one outbox flush. Every item's payload was
pickled on the sender's thread when it was sent, so a message that does not
pickle fails the `tell` that sent it, naming it (`MessageNotPicklableError`).

Versioning follows `actors.protocol`: a frame of a newer minor version is
accepted (unknown item kinds in it are skipped), an unknown major version is
refused with `WireVersionError`.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from actors.errors import MessageNotPicklableError, WireVersionError

__all__ = [
    "ASK",
    "CALL",
    "FENCE",
    "HOLD",
    "MOVE",
    "MOVED",
    "RELEASE",
    "REPLY",
    "REPOINT",
    "STATE",
    "TELL",
    "TERMINATED",
    "UNWATCH",
    "WATCH",
    "WIRE_VERSION",
    "Frame",
    "decode",
    "dumps_payload",
    "encode",
    "encode_fields",
]

WIRE_VERSION = (1, 3)
"""(major, minor) of the frame layout and item kinds this troupe speaks."""

# Item kinds. An item is a tuple whose first element is its kind.
TELL = 1  # (TELL, name, payload)
ASK = 2  # (ASK, name, payload, correlation id)
CALL = 3  # (CALL, name, payload of (attribute, args, kwargs), correlation id)
REPLY = 4  # (REPLY, correlation id, ok, payload of the value or the exception)
# (WATCH, name[, watcher]): the sender watches the receiver's actor `name`; one passed on by an old home
# of the actor names the node that watches (since 1.3; a 1.2 node registers the old home instead)
WATCH = 5
UNWATCH = 6  # (UNWATCH, name[, watcher])
TERMINATED = 7  # (TERMINATED, name, payload of the reason)
FENCE = 8  # (FENCE, name, token, fencer): every earlier item from node `fencer` to `name` has arrived
# Migration, node to node (see `actors.cluster.node`, "Migration"):
HOLD = 9  # (HOLD, name, token, source): hold new mail for `name`, fence what was sent to it
MOVE = 10  # (MOVE, name, spec, restart, incarnation, snapshot, mail, watchers, token): start it here
MOVED = 11  # (MOVED, name, token, ok, payload of the error or None): the target has it
RELEASE = 12  # (RELEASE, name, node, token, incarnation): `name` lives on `node`; send what was held there
# (REPOINT, correlation id, node, incarnation): the receiver's ask `corr` is answered from `node` now, where
# the actor is at `incarnation` (since 1.2; the incarnation since 1.3: a REPOINT naming an older one is stale)
REPOINT = 13
STATE = 14  # (STATE, name, token, snapshot or None): a migration's state, ahead of its MOVE (whose snapshot is
# then None); None: the move was given up, drop it (since 1.3)


class Frame(NamedTuple):
    """One transport call's worth of items, from `src` to `dst`.

    A named tuple, not an attrs class: each frame is built once when it is
    decoded, on every hop of every message, and a frozen attrs class took
    ~3 µs to construct here against ~0.9 µs (four per cross-node ask).

    Attributes:
        src, src_epoch: the sending node and its incarnation (a restarted node
            has a new epoch, so the receiver resets its sequence state).
        dst: the receiving node's name.
        seq: the frame's sequence number on this link, from 1; 0 for a frame
            that is not sequenced (a heartbeat or a bare ack), never retransmitted.
        ack: the highest sequence number received in order from `dst`.
        items: the items, in send order.
        version: the (major, minor) wire version it was encoded with.
    """

    src: str
    src_epoch: int
    dst: str
    seq: int
    ack: int
    items: tuple[tuple[Any, ...], ...]
    version: tuple[int, int] = WIRE_VERSION


def encode(frame: Frame) -> bytes:
    """Return the bytes of `frame` (its payloads are bytes already)."""
    return pickle.dumps(
        (frame.version, frame.src, frame.src_epoch, frame.dst, frame.seq, frame.ack, frame.items),
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def encode_fields(  # noqa: PLR0917 - a frame's fields, in order
    src: str, src_epoch: int, dst: str, seq: int, ack: int, items: tuple[tuple[Any, ...], ...]
) -> bytes:
    """Return the bytes of the frame of these fields at this troupe's version (`encode` without a `Frame`)."""
    return pickle.dumps((WIRE_VERSION, src, src_epoch, dst, seq, ack, items), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Frame:
    """Return the frame in `data`.

    Raises:
        WireVersionError: the frame's major version is not this troupe's.
    """
    raw = pickle.loads(data)  # noqa: S301 - frames come from the cluster's own nodes
    version = tuple(raw[0])
    if version[0] != WIRE_VERSION[0]:
        msg = (
            f"a cluster frame from node {raw[1]!r} has wire version {version[0]}.{version[1]}, "
            f"and this node speaks {WIRE_VERSION[0]}.{WIRE_VERSION[1]}: an unknown major version is refused; "
            "run the same major version of troupe on every node"
        )
        raise WireVersionError(msg)
    return Frame(raw[1], raw[2], raw[3], raw[4], raw[5], tuple(raw[6]), version[:2])


def dumps_payload(value: Any, what: str) -> bytes:
    """Pickle `value` for the wire, or raise `MessageNotPicklableError` naming `what`."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        msg = (
            f"{what} {value!r:.200} cannot cross to another node: it does not pickle ({exc}); "
            "send attrs classes, dataclasses, tuples and plain values defined at module level"
        )
        raise MessageNotPicklableError(msg) from exc
