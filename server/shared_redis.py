"""The Redis implementations of `server.shared_state`'s protocols, for several API workers.

Every key starts with REDIS_PREFIX. Each operation is one round trip (a briefing another worker
put costs a second one, once), and each that reads and writes is one Lua script (atomic in
Redis), so no worker acts on what another has just changed:

- visits: `P:visit:<reader>` holds "last seen|since" as ISO times (their offsets kept, so every
  worker hands out the same "since"); `P:erased:<reader>` the erasure time in microseconds. A
  record is a check-and-set against the erasure, in one script.
- briefings: `P:cache:e:<reader>:<hash of variant and since>` holds "generation|token", and
  `P:cache:b:<token>` the briefing's JSON. A token names one put for good, so a worker keeps the
  entries it decoded by token and a hit is one small read, with no JSON to decode (decoding a
  five-item briefing cost more than the rest of a cached request, bench/shared_state.py). Drops
  cannot run a predicate over every entry, so each entry is indexed by reader (`P:cache:r:<id>`)
  and by every article it shows or cites (`P:cache:a:<id>`), the only drops the service needs
  besides "everything"; a drop deletes the indexed entries in one script. "Everything" (an
  ingest) bumps `P:cache:gen` instead: O(1), and an entry of an older generation is a miss.
  Every drop bumps `P:cache:epoch`, which a put checks against the epoch read before composing.
- counters: `P:count:<name>`, INCR and EXPIRE on the first hit, in one script.

Entries, bodies, index sets and visits expire (`TTL_S`, `VISIT_TTL_S`): all are recomputable
from SQL; a drop deletes the bodies it finds, a drop-all leaves them to expire. Two scripts build
key names (a dropped entry's body, the drop-all count), so they run on a single Redis or a
primary, not on a Redis Cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from briefing import Briefing, briefing_from_json
from server.shared_memory import shown_or_cited
from server.shared_state import Entry, State, unavailable

log = logging.getLogger(__name__)

TTL_S = 86_400  # a cached briefing, its index sets, an erasure mark
VISIT_TTL_S = 7 * 86_400  # a visit state not seen for a week is read from SQL again

_RECORD = """
local erased = redis.call('GET', KEYS[2])
if erased and tonumber(ARGV[2]) <= tonumber(erased) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
_PUT = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
for i = 4, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[2])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 1
"""
_DROP_INDEXED = """
redis.call('INCR', KEYS[1])
local live = (redis.call('GET', KEYS[3]) or '0') .. '|'
local dropped = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local value = redis.call('GET', key)
  if value then
    if string.sub(value, 1, #live) == live then dropped = dropped + 1 end
    redis.call('DEL', ARGV[1] .. string.match(value, '|(.*)$'))  -- its body
  end
  redis.call('DEL', key)
  redis.call('SREM', KEYS[4], key)
end
redis.call('DEL', KEYS[2])
return dropped
"""
_DROP_ALL = """
redis.call('INCR', KEYS[1])
local old = redis.call('GET', KEYS[2]) or '0'
redis.call('INCR', KEYS[2])
local dropped = redis.call('SCARD', ARGV[1] .. old)
redis.call('DEL', ARGV[1] .. old)
return dropped
"""
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class RedisVisitStates:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self._record = client.register_script(_RECORD)

    def get(self, reader_id: str) -> State | None:
        with unavailable():
            value = self.client.get(self._visit(reader_id))
        return None if value is None else _state(value)

    def load(self, reader_id: str, state: State) -> State:
        with unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._visit(reader_id), _state_text(state), nx=True, ex=VISIT_TTL_S)
            pipe.get(self._visit(reader_id))
            _, value = pipe.execute()
        return _state(value)

    def record(self, reader_id: str, state: State, composed_at: datetime) -> bool:
        keys = [self._visit(reader_id), self._erased(reader_id)]
        with unavailable():
            done = self._record(keys, [_state_text(state), _micros(composed_at), VISIT_TTL_S])
        return bool(done)

    def forget(self, reader_id: str, at: datetime) -> None:
        with unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._erased(reader_id), _micros(at), ex=TTL_S)
            pipe.delete(self._visit(reader_id))
            pipe.execute()

    def erased(self, reader_ids: Sequence[str]) -> dict[str, datetime]:
        if not reader_ids:
            return {}
        with unavailable():
            values = self.client.mget([self._erased(r) for r in reader_ids])
        return {r: _from_micros(int(v)) for r, v in zip(reader_ids, values, strict=True) if v is not None}

    def _visit(self, reader_id: str) -> str:
        return f"{self.prefix}:visit:{reader_id}"

    def _erased(self, reader_id: str) -> str:
        return f"{self.prefix}:erased:{reader_id}"


class RedisBriefings:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self._gen, self._epoch = f"{prefix}:cache:gen", f"{prefix}:cache:epoch"
        self._put = client.register_script(_PUT)
        self._drop_indexed = client.register_script(_DROP_INDEXED)
        self._drop_all = client.register_script(_DROP_ALL)
        self._decoded = Decoded()

    def epoch(self) -> tuple[int, int]:
        """(generation, epoch) before composing; `put` stores under that generation."""
        with unavailable():
            gen, epoch = self.client.mget([self._gen, self._epoch])
        return int(gen or 0), int(epoch or 0)

    def get(self, key: tuple[Any, ...]) -> Entry | None:
        with unavailable():
            gen, value = self.client.mget([self._gen, self._entry(key)])
        live = f"{int(gen or 0)}|".encode()
        if not isinstance(value, bytes) or not value.startswith(live):
            return None
        token = value[len(live) :].decode()
        return self._decoded.get(token) or self._fetch(token)

    def put(self, key: tuple[Any, ...], briefing: Briefing, epoch: Any) -> dict[str, Any]:
        body = briefing.to_json()
        gen, seen = epoch
        token = uuid.uuid4().hex
        text = json.dumps(body, separators=(",", ":"))
        keys = [self._epoch, self._entry(key), self._body(token), self._index("r", briefing.reader_id)]
        keys += [self._all(gen), *(self._index("a", a) for a in sorted(shown_or_cited(briefing)))]
        with unavailable():
            if self._put(keys, [seen, f"{gen}|{token}", text, TTL_S]):
                self._decoded.put(token, (briefing, body))
        return body

    def drop(self, keep: Callable[[Briefing], bool]) -> int:
        """Drops every entry, whatever `keep` says: a predicate cannot run inside Redis, and a
        drop of more than asked is always safe (the next requests compose again)."""
        with unavailable():
            return int(self._drop_all([self._epoch, self._gen], [f"{self.prefix}:cache:all:"]))

    def drop_reader(self, reader_id: str) -> int:
        return self._drop(self._index("r", reader_id))

    def drop_article(self, article_id: str) -> int:
        return self._drop(self._index("a", article_id))

    def __len__(self) -> int:
        """Entries put in this generation and not dropped (expired ones still count)."""
        with unavailable():
            gen = int(self.client.get(self._gen) or 0)
            return int(self.client.scard(self._all(gen)))

    def _drop(self, index: str) -> int:
        with unavailable():
            gen = int(self.client.get(self._gen) or 0)
            keys = [self._epoch, index, self._gen, self._all(gen)]
            return int(self._drop_indexed(keys, [f"{self.prefix}:cache:b:"]))

    def _fetch(self, token: str) -> Entry | None:
        """An entry this worker has not decoded yet (another one put it)."""
        with unavailable():
            text = self.client.get(self._body(token))
        if text is None:  # dropped or expired in between
            return None
        try:
            body: dict[str, Any] = json.loads(text)
            entry = (briefing_from_json(body), body)
        except (ValueError, KeyError, TypeError):
            # Written by another version of the code (a rolling upgrade runs two side by side):
            # a miss, composed again, rather than a 500 for every reader cached meanwhile.
            log.warning("a cached briefing in a form this version cannot read: treated as a miss")
            return None
        self._decoded.put(token, entry)
        return entry

    def _body(self, token: str) -> str:
        return f"{self.prefix}:cache:b:{token}"

    def _entry(self, key: tuple[Any, ...]) -> str:
        return f"{self.prefix}:cache:e:{key[0]}:{_digest(key[1:])}"

    def _index(self, kind: str, name: str) -> str:
        return f"{self.prefix}:cache:{kind}:{name}"

    def _all(self, gen: int) -> str:
        return f"{self.prefix}:cache:all:{gen}"


class Decoded:
    """Entries this worker has decoded (or put), by token: a token names one put's content for
    good, so the copy is exact, and it is served only while Redis still names that token."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Entry | None:
        with self._lock:
            found = self._items.get(token)
            if found is not None:
                self._items.move_to_end(token)
            return found

    def put(self, token: str, entry: Entry) -> None:
        with self._lock:
            self._items[token] = entry
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class RedisCounter:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self._hit = client.register_script(_HIT)

    def hit(self, name: str, window_s: int) -> tuple[int, int]:
        with unavailable():
            count, ttl = self._hit([f"{self.prefix}:count:{name}"], [window_s])
        return int(count), int(ttl)

    def peek(self, name: str) -> int:
        with unavailable():
            return int(self.client.get(f"{self.prefix}:count:{name}") or 0)


def _state_text(state: State) -> str:
    return "|".join("" if t is None else t.isoformat() for t in state)


def _state(value: bytes | str) -> State:
    text = value.decode() if isinstance(value, bytes) else value
    last, since = (datetime.fromisoformat(t) if t else None for t in text.split("|"))
    return last, since


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)  # exact, unlike a float timestamp


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@functools.lru_cache(maxsize=65_536)  # a few variants and visits' "since": the same ones recur
def _digest(rest: tuple[Any, ...]) -> str:
    return hashlib.sha1(json.dumps(rest, default=_plain).encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    """Key parts as JSON: a time as its instant (any offset), a variant as its fields."""
    if isinstance(value, datetime):
        return _micros(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"cannot key a cached briefing by {type(value).__name__}")
