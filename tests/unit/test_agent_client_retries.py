"""The coordinator's client retries exactly the ops the wire protocol declares idempotent.

A real ROUTER socket on 127.0.0.1 plays an agent that never answers and
records every request it receives; the client under test is the real
AgentClient (plain TCP), so what is counted is what went over the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq
from etcdguard.common.wire import protocol as P
from etcdguard.coordinator.agents.client import DEFAULT_RETRIES, AgentClient, AgentUnreachable

from tests.unit.test_protocol import VALID

ATTEMPT = 0.25   # seconds each attempt waits for the reply that never comes


class SilentAgent:
    """A ROUTER that reads requests and answers none; ``seen`` holds (op, request id) in arrival order."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.seen: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(20):
                frames = self.sock.recv_multipart()
                req = P.decode_request(frames[1:])
                self.seen.append((req.op, req.id))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)


@pytest.fixture
def agent() -> Iterator[SilentAgent]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    silent = SilentAgent(ctx)
    try:
        yield silent
    finally:
        silent.close()
        ctx.term()


ONE_OF_EACH = list({op: (op, args, data) for op, args, data in reversed(VALID)}.values())


def test_one_valid_request_per_op():
    assert sorted(op for op, _, _ in ONE_OF_EACH) == sorted(P.OPS)


@pytest.mark.parametrize(("op", "args", "data"), ONE_OF_EACH, ids=lambda v: v if isinstance(v, str) else "")
def test_the_client_resends_exactly_the_idempotent_ops(agent: SilentAgent, op, args, data):
    client = AgentClient("m1", agent.endpoint, server_public_key=None, client_public=None, client_secret=None,
                         insecure=True)
    attempts = DEFAULT_RETRIES + 1 if P.OPS[op].idempotent else 1
    try:
        with pytest.raises(AgentUnreachable, match=rf"did not answer {op} within .*\({attempts} attempts?\)"):
            client.request(op, args, data=data, timeout=ATTEMPT * attempts)
    finally:
        client.close()
    seen = [rid for o, rid in agent.seen if o == op]
    assert len(seen) == attempts
    assert len(set(seen)) == 1   # a retry carries the same request id, so the agent can deduplicate it


def test_an_explicit_retry_count_wins_over_the_spec(agent: SilentAgent):
    client = AgentClient("m1", agent.endpoint, server_public_key=None, client_public=None, client_secret=None,
                         insecure=True)
    try:
        with pytest.raises(AgentUnreachable, match=r"\(1 attempt\)"):
            client.request("status", timeout=ATTEMPT, retries=0)
    finally:
        client.close()
    assert [op for op, _ in agent.seen] == ["status"]
