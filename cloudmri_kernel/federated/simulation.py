"""Flower's messages delivered in one process: federated training in a notebook or a test, without servers.

:class:`InProcessGrid` implements Flower's ``Grid`` (what a ServerApp talks to) by calling each node's ClientApp
directly with the node's own ``Context`` (its node config names the site and its data), one node after the
other. The strategies, ClientApp, messages and records are Flower's own, exactly as in a deployment with a
SuperLink and one SuperNode per site; only the transport differs. A ClientApp that raises becomes an error
reply, as a SuperNode's failure does, so drop-outs behave as in a deployment. (Flower's own simulation engine
needs Ray, which this project does not install.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApps in this process; ``nodes`` maps node ID to its node config."""

    def __init__(self, client_app: ClientApp | Mapping[int, ClientApp], nodes: Mapping[int, dict], run_id: int = 1):
        self._apps = client_app if isinstance(client_app, Mapping) else {node: client_app for node in nodes}
        self._contexts = {node: Context(run_id=run_id, node_id=node, node_config=dict(config), state=RecordDict(),
                                        run_config={}) for node, config in nodes.items()}
        self._run = None
        self._run_id = run_id
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        # Messages take their run and sender from the process's task identity, as in a ServerApp process.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 0

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id,
                       ttl=ttl)

    def site_names(self) -> dict[int, str]:
        """Node ID → the site name in its node config."""
        return {node: str(context.node_config.get("name", f"node {node}")) for node, context in self._contexts.items()}

    def node_state(self, node: int) -> RecordDict:
        """What a node's ClientApp kept in its context during the run (the site's own, never sent anywhere)."""
        return self._contexts[node].state

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        try:
            return self._apps[node](message, self._contexts[node])
        except Exception as exc:  # noqa: BLE001 (a failing site is a reply with an error, as from a SuperNode)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"),
                           reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = f"m{next(self._ids)}"
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's SuperLink sets it
            self._replies[message_id] = self._deliver(message)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
