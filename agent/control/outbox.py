"""The only sender on the ROUTER, and the per-peer bound on reply bytes the transport still holds.

A ROUTER queues replies for a peer that does not read them, and libzmq's
queue is counted in messages, not bytes: a peer that pipelines
``snapshot.fetch`` requests for 4 MiB chunks and never reads would otherwise
have the agent hold 4 MiB per request, without bound. So every reply that
carries a data chunk is sent zero-copy with a tracker, which libzmq marks done
when it has released the chunk (written it to the connection, or dropped it
with a closed connection); the chunks not yet done are the bytes in flight of
that peer. A request for more than ``FETCH_WINDOW`` in flight is refused with
``busy`` before anything is read from disk. The coordinator's client keeps at
most ``credit`` chunks in flight (4 x 1 MiB by default) and refuses a credit
above the window itself, so an honest peer never meets the bound.

Peers are counted by CURVE key (all connections of one coordinator share its
window), by ROUTER identity on an insecure server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import zmq
from etcdguard.common.base.durations import format_bytes
from etcdguard.common.wire.protocol import FETCH_WINDOW

SEND_HWM = 256          # replies queued per connection before the ROUTER drops more (small ones: status, errors)
RECEIVE_HWM = 64        # requests queued per connection before libzmq stops reading from it
MAX_HELD = 64           # data replies in flight per peer, whatever their size (a client's credit is at most 64)


@dataclass
class _Held:
    tracker: zmq.MessageTracker
    size: int


class Outbox:
    """Sends on the ROUTER (from the socket loop only) and counts each peer's data bytes in flight."""

    def __init__(self, router: zmq.Socket[Any], window: int = FETCH_WINDOW, max_held: int = MAX_HELD) -> None:
        self.router = router
        self.window = window
        self.max_held = max_held
        self._held: dict[str, list[_Held]] = {}

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        # ROUTER drops what it cannot deliver (peer gone, or its queue full): never blocks the loop.
        self.router.send_multipart([identity, *frames])

    def send_data(self, peer: str, identity: bytes, frames: list[bytes]) -> None:
        """Send a reply whose last frame is a data chunk, counting it against ``peer``'s window."""
        if len(frames) < 2:
            self.send(identity, frames)
            return
        chunk = zmq.Frame(frames[-1], track=True, copy=False)
        self.router.send_multipart([identity, *frames[:-1]], zmq.SNDMORE)
        self.router.send(chunk, copy=False, track=True)
        size = sum(len(f) for f in frames)
        self._held.setdefault(peer, []).append(_Held(chunk.tracker, size))

    def in_flight(self, peer: str) -> tuple[int, int]:
        """(data replies, bytes) sent to ``peer`` that the transport has not released yet."""
        held = self._held.get(peer)
        if not held:
            return 0, 0
        left = [h for h in held if not h.tracker.done]
        if left:
            self._held[peer] = left
        else:
            del self._held[peer]
        return len(left), sum(h.size for h in left)

    def refusal(self, peer: str, size: int) -> Optional[str]:
        """Why a data reply of ``size`` bytes may not be sent to ``peer`` now, or None."""
        count, held = self.in_flight(peer)
        if count >= self.max_held or held + size > self.window:
            return (f"{count} chunks ({format_bytes(held)}) sent to this peer are not read yet; the agent keeps at "
                    f"most {format_bytes(self.window)} in flight per peer: read the replies before asking for more")
        return None

    def forget_idle(self) -> None:
        """Drop the entries of peers with nothing in flight (housekeeping)."""
        for peer in list(self._held):
            self.in_flight(peer)
