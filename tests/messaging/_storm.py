"""A child process for the kill -9 tests: a publish storm (or inbox sends), printing each acknowledgement.

    python -m tests.messaging._storm history|inbox|outbox PATH

Each line on stdout is the id of an entry the store has acknowledged (committed).
The parent kills this process with SIGKILL mid-storm.
"""

from __future__ import annotations

import sys

from actors import Actor, ActorSystem
from actors.messaging import DurableInbox, MessageBroker, MessageHistory, ProducerController, spawn_service
from actors.protocol import AgentMessage, MessageType


class _Sink(Actor):
    def on_receive(self, message: object) -> None:
        pass


def _say(acknowledged: object) -> None:
    sys.stdout.write(f"{acknowledged}\n")
    sys.stdout.flush()


def main(kind: str, path: str) -> None:
    with ActorSystem("storm") as system:
        if kind == "history":
            history = spawn_service(system, MessageHistory, path)
            broker = spawn_service(system, MessageBroker, history=history)
            broker.subscribe("storm.*", system.spawn(_Sink))
            i = 0
            while True:
                futures = [broker.publish_acked("storm.x", {"n": i + k}) for k in range(50)]
                for k, future in enumerate(futures):
                    future.get(timeout=30)
                    _say(i + k)
                i += 50
        elif kind == "outbox":
            # A consumer that never grants credit: everything accepted stays in the outbox.
            producer = spawn_service(system, ProducerController, system.spawn(_Sink), outbox=path)
            i = 0
            while True:
                producer.tell({"n": i})  # returns once committed
                _say(i)
                i += 1
        else:
            inbox = spawn_service(system, DurableInbox, path)
            i = 0
            while True:
                message = AgentMessage(sender="s", recipient="r", type=MessageType.TASK_REQUEST, content=i)
                _say(inbox.send(message, timeout=30))
                i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
