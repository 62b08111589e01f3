"""The direct Redis read against a Redis Cluster: each packed command goes to the node that
serves its key's slot, one pipelined write per node, the nodes in parallel.

Feast's keys (the serialized entity key + project) hash to slots as the server hashes them
(CRC16 mod 16384, a `{hash tag}` honoured: redis-py's `key_slot`). The slot map comes from
`CLUSTER SLOTS` and is read again once when a reply says the map is stale (MOVED, CLUSTERDOWN)
or a node does not answer (restarted, failed over); ASK is followed for the one command, with
ASKING, as a resharding needs. The replies come back in request order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Address = tuple[str, int]
ASKING = b"*1\r\n$6\r\nASKING\r\n"
# Replies that a retry on a fresh slot map (or, for ASK, on the named node) may answer.
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
NODE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError)
# What each node's connections take over from the sync cluster client Feast configured.
NODE_CONNECTION_KWARGS = (
    "username", "password", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "client_name",
)  # fmt: skip


@dataclass
class SlotMap:
    """Which node serves each of the 16384 slots (an index into `nodes`; -1: none)."""

    nodes: list[Address]
    owner: list[int]

    @classmethod
    def parse(cls, reply: Sequence[Any], asked: Address) -> SlotMap:
        """From a `CLUSTER SLOTS` reply given by `asked` (whose empty host means its own)."""
        nodes: list[Address] = []
        index: dict[Address, int] = {}
        owner = [-1] * REDIS_CLUSTER_HASH_SLOTS
        for start, end, primary, *_ in reply:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            address = (host or asked[0], int(primary[1]))
            if address not in index:
                index[address] = len(nodes)
                nodes.append(address)
            owner[int(start) : int(end) + 1] = [index[address]] * (int(end) - int(start) + 1)
        return cls(nodes, owner)


@dataclass
class _LoopState:
    """What is bound to one event loop: the pools (one per node) and the slot map."""

    pools: dict[Address, aioredis.ConnectionPool] = field(default_factory=dict)
    slots: SlotMap | None = None
    refreshes: int = 0


class ClusterReader:
    """Sends packed commands to a Redis Cluster and returns their replies in order.

    Args:
        startup: nodes to ask for the slot map (any subset of the cluster).
        connection_kwargs: connection settings (password, timeouts, ssl) as Feast's
            connection string gives them.
        max_connections: per node.
    """

    @classmethod
    def of(cls, connection_string: str, max_connections: int = 64) -> ClusterReader:
        """From Feast's `connection_string` (`host:port,host:port,password=...,ssl=true`)."""
        from feast.infra.online_stores.redis import RedisOnlineStore

        nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
        startup = [(str(n["host"]), int(n["port"])) for n in nodes]
        return cls(startup, params, max_connections)

    def __init__(
        self,
        startup: Sequence[Address],
        connection_kwargs: dict[str, Any] | None = None,
        max_connections: int = 64,
    ) -> None:
        if not startup:
            raise ValueError("a Redis Cluster needs at least one startup node")
        self.startup = list(startup)
        kwargs = connection_kwargs or {}
        self.kwargs: dict[str, Any] = {k: kwargs[k] for k in NODE_CONNECTION_KWARGS if k in kwargs}
        if kwargs.get("ssl"):
            self.kwargs["connection_class"] = aioredis.SSLConnection
            self.kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl_")})
        self.max_connections = max_connections
        self._state: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None

    @property
    def refreshes(self) -> int:
        """How often the slot map was read (the first read included), on the current loop."""
        return self._state[1].refreshes if self._state is not None else 0

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state[0] is not loop:
            self._state = (loop, _LoopState())
        return self._state[1]

    def _pool(self, state: _LoopState, address: Address) -> aioredis.ConnectionPool:
        pool = state.pools.get(address)
        if pool is None:
            pool = aioredis.ConnectionPool(
                host=address[0],
                port=address[1],
                max_connections=self.max_connections,
                **self.kwargs,
            )
            state.pools[address] = pool
        return pool

    async def slot_map(self) -> SlotMap:
        """The current slot map (read once per event loop, and again after a failure)."""
        state = self._loop_state()
        if state.slots is None:
            await self._refresh(state)
        assert state.slots is not None
        return state.slots

    async def _refresh(self, state: _LoopState) -> None:
        """Reads the slot map from the first node that answers: the known ones, then the
        startup ones."""
        known = state.slots.nodes if state.slots is not None else []
        last: BaseException | None = None
        for address in dict.fromkeys([*known, *self.startup]):
            pool = self._pool(state, address)
            try:
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            except NODE_ERRORS as exc:
                last = exc
                continue
            try:
                await conn.send_command("CLUSTER", "SLOTS", check_health=False)
                reply = await conn.read_response()
            except NODE_ERRORS as exc:
                await conn.disconnect()
                last = exc
                continue
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            finally:
                await pool.release(conn)
            slots = SlotMap.parse(reply, address)
            if not slots.nodes:  # a node not (yet) in a cluster
                continue
            state.slots = slots
            state.refreshes += 1
            return
        raise RedisConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {last!r}")

    async def send(self, keys: Sequence[bytes], packed: Sequence[bytes]) -> list[Any]:
        """The replies to `packed[i]` (a command on `keys[i]`), in order.

        Raises:
            redis.exceptions.ConnectionError, TimeoutError: a node still failed on the retry.
            redis.exceptions.ResponseError: a command failed (a redirect: on the retry too).
        """
        state = self._loop_state()
        if state.slots is None:
            await self._refresh(state)
        slots = [key_slot(k) for k in keys]
        replies: list[Any] = [None] * len(keys)
        pending = list(range(len(keys)))
        asking: dict[int, Address] = {}
        for attempt in range(2):
            assert state.slots is not None
            owner, nodes = state.slots.owner, state.slots.nodes
            groups: dict[Address, list[int]] = {}
            for i in pending:
                where = asking.get(i)
                if where is None:
                    node = owner[slots[i]]
                    if node < 0:
                        raise ClusterDownError(f"slot {slots[i]} is not served")
                    where = nodes[node]
                groups.setdefault(where, []).append(i)
            wires = [
                b"".join(ASKING + packed[i] if i in asking else packed[i] for i in idx)
                for idx in groups.values()
            ]
            sends = [
                self._node_send(state, address, wire, [i in asking for i in idx])
                for (address, idx), wire in zip(groups.items(), wires, strict=True)
            ]
            results: list[Any]
            if len(sends) == 1:  # one node (a warm cache reads the user's hash only)
                try:
                    results = [await sends[0]]
                except NODE_ERRORS as exc:
                    results = [exc]
            else:
                results = await asyncio.gather(*sends, return_exceptions=True)
            failed: list[int] = []
            first: BaseException | None = None
            stale = False
            asking = {}
            for idx, result in zip(groups.values(), results, strict=True):
                if isinstance(result, NODE_ERRORS):
                    failed += idx
                    first, stale = first or result, True
                    continue
                if isinstance(result, BaseException):
                    raise result
                for i, reply in zip(idx, result, strict=True):
                    if isinstance(reply, REDIRECTS):
                        failed.append(i)
                        first = first or reply
                        if type(reply) is AskError:
                            asking[i] = (str(reply.host), int(reply.port))
                        elif not isinstance(reply, TryAgainError):
                            stale = True
                    else:
                        replies[i] = reply
            if not failed:
                return replies
            if attempt:
                assert first is not None
                raise first
            if stale:
                await self._refresh(state)
            pending = failed
        raise AssertionError("unreachable")

    async def _node_send(
        self, state: _LoopState, address: Address, wire: bytes, asked: list[bool]
    ) -> list[Any]:
        """One pipelined write to one node and its replies (a redirect as its exception).

        As the single-node read: a connection that failed or was left with unread replies (the
        read was cancelled) is closed, never reused. After a node error its idle connections
        are dropped too (they went stale together: a restart)."""
        pool = self._pool(state, address)
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(wire, check_health=False)
            out: list[Any] = []
            for was_asked in asked:
                if was_asked:
                    await conn.read_response()  # ASKING's +OK
                try:
                    out.append(await conn.read_response())
                except REDIRECTS as exc:
                    out.append(exc)
            return out
        except NODE_ERRORS:
            await conn.disconnect()
            await pool.disconnect(inuse_connections=False)
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def aclose(self) -> None:
        if self._state is not None:
            for pool in self._state[1].pools.values():
                await pool.disconnect()
            self._state = None
