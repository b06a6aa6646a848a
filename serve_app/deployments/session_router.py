"""A Serve request router that pins every realtime session to one replica for its life.

Ray 2.60's experimental ``ConsistentHashRouter`` maps a session id to a replica by a hash ring:
when the chosen replica is busy it falls back to the next ones on the ring
(``num_fallback_replicas``), and when the replica set changes (a scale-up, a scale-down) the
ring is rebuilt and sessions silently move. Streaming state cannot move, so this router keeps
an explicit table instead:

* a call whose session is not in the table (``open``) goes to the replica holding the fewest
  sessions pinned by this router, and the session is pinned there;
* every later call of the session goes to that replica and nowhere else: no fallback when it
  is busy (Serve's own back-off waits), and no re-hashing when replicas come and go;
* a replica that leaves the running set because Serve is scaling it down stays routable for
  the sessions pinned to it while it drains (their ``attach`` calls keep it draining), so a
  scale-down never cuts a live session;
* when the pinned replica has died, the call goes to any replica, which answers
  ``SessionLost``: the session ends with a clear error, never a silent fresh start;
* ``close`` drops the pin;
* ``session_id="replica:<id>"`` addresses one replica (stats of every replica, for operators).

A WebSocket stays on one ingress replica for its life, and the router lives in that replica's
handle, so one table sees every call of a session. Calls without a session id are routed by
two random replicas, the less loaded one, as Serve's default router does. (Built on Serve's ``RequestRouter``
extension point; ``_select_from_candidate_replicas`` is overridden so that a draining replica,
which is no longer among Serve's candidates, can still be chosen.)
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

logger = logging.getLogger("ray.serve")


REPLICA_ADDRESS = "replica:"
"""``handle.options(session_id="replica:<id>")`` reaches that replica (operators' stats calls;
Serve has no broadcast)."""


class SessionRouter(RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        self._pins: dict[str, ReplicaID] = {}
        self._draining: dict[ReplicaID, RunningReplica] = {}

    # -- the replica set ----------------------------------------------------------------------

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = dict(self._replicas)
        super().update_replicas(replicas)
        pinned = set(self._pins.values())
        for rid, replica in before.items():
            if rid not in self._replicas and rid in pinned:
                logger.info(
                    "replica %s is draining; %d sessions stay pinned to it",
                    rid,
                    list(self._pins.values()).count(rid),
                )
                self._draining[rid] = replica
        for rid in list(self._draining):
            if rid in self._replicas or rid not in pinned:
                del self._draining[rid]

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._draining.pop(replica_id, None)

    # -- routing ------------------------------------------------------------------------------

    def _pinned(self, session_id: str) -> RunningReplica | None:
        rid = self._pins.get(session_id)
        if rid is None:
            return None
        return self._replicas.get(rid) or self._draining.get(rid)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        meta = pending_request.metadata if pending_request is not None else None
        session = getattr(meta, "session_id", None) or None
        if session is None or not candidate_replicas:
            # Power of two choices, as Serve's default router: two at random, the less loaded.
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        if session.startswith(REPLICA_ADDRESS):  # an operator's call to one replica
            rid = session.removeprefix(REPLICA_ADDRESS)
            chosen = [
                r for r in [*candidate_replicas, *self._draining.values()] if r.replica_id.unique_id == rid
            ]
            return [chosen] if chosen else []
        method = getattr(meta, "call_method", "")
        if session in self._pins:
            replica = self._pinned(session)
            if method == "close":
                self._pins.pop(session, None)
            if replica is not None:
                return [[replica]]
            # Its replica is gone: any replica will answer SessionLost.
            return [candidate_replicas]
        if method != "open":
            return [candidate_replicas]  # a session this router never opened: SessionLost
        load = Counter(self._pins.values())
        best = min(candidate_replicas, key=lambda r: (load[r.replica_id], r.replica_id.unique_id))
        self._pins[session] = best.replica_id
        return [[best]]

    async def _select_from_candidate_replicas(
        self, candidates: list[RunningReplica], backoff_index: int
    ) -> RunningReplica | None:
        if len(candidates) == 1 and candidates[0].replica_id in self._draining:
            return candidates[0]  # draining: not probed, not among Serve's candidates
        return await super()._select_from_candidate_replicas(candidates, backoff_index)

    def _fulfill_next_pending_request(self, replica: RunningReplica, request_metadata: Any = None) -> None:
        """Hand ``replica`` to the oldest pending call of the same session. Serve's base router
        matches by ``internal_request_id``, but every handle call made while serving one request
        (a WebSocket's ``attach`` and ``feed``s) inherits that request's id, so concurrent calls
        of one session would collide there and one would never be sent. Calls of one session
        all go to one replica, so any of them may take it; the routing loop goes on until each
        task's own call is sent."""
        session = getattr(request_metadata, "session_id", "") or ""
        for pending in self._pending_requests_to_fulfill:
            if pending.future.done() or (pending.metadata.session_id or "") != session:
                continue
            self._cancel_routing_task_for_pending_request(pending)
            self._record_queue_wait_time(pending)
            pending.future.set_result(replica)
            self._remove_pending_request_from_indices(pending)
            return

    def pins(self) -> dict[str, str]:
        """Session → replica id (for tests and debugging)."""
        return {s: r.unique_id for s, r in self._pins.items()}
