"""Per-API-key rate limits (a token bucket) and image quotas (per UTC day and calendar month).

One protocol, :class:`QuotaCounters`, with two backends chosen by one setting: :class:`MemoryCounters`
(embedded mode, one process) and :class:`RedisCounters` (cluster mode: every replica sharing one Redis
shares one budget; each take is one atomic Lua script). Time is injected as ``now`` (Unix seconds), so
tests never sleep; the server passes ``time.time()``. Every take returns :class:`Decision` values that
:func:`ratelimit_headers` turns into the IETF ``RateLimit`` / ``RateLimit-Policy`` headers.

Example::

    counters = open_counters(None)  # or open_counters("redis://localhost:6379/0")
    limits = KeyLimits(rps=5, burst=10, images_per_day=1000)
    decisions = [d for d in [await counters.take_request("k1", limits, time.time())] if d]
    decisions += await counters.take_images("k1", limits, 3, time.time())  # QuotaExceeded when over
    headers = ratelimit_headers(decisions)  # {"RateLimit-Policy": '"rps";q=10;w=1, ...', "RateLimit": ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from imaas.domain import KeyLimits
from imaas.errors import CountersUnavailable, QuotaExceeded, RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["Decision", "MemoryCounters", "QuotaCounters", "RedisCounters", "open_counters", "ratelimit_headers"]

_EPS = 1e-9  # float slack: a bucket refilled to 0.9999999999 holds one whole token
_GRACE_S = 3600  # quota counters outlive their window by this much (late refunds still find them)


@dataclass(frozen=True)
class Decision:
    """One limit's state after a take: for the IETF RateLimit headers."""

    policy: str  # "rps", "day" or "month"
    limit: int  # the bucket size (burst) or the quota
    window_s: int  # 1 for rps; seconds in the UTC day / calendar month of the quota
    remaining: int  # what is left after this take (>= 0)
    reset_s: float  # seconds until `remaining` is back to `limit` (rps) or the window resets (day/month)


class QuotaCounters(Protocol):
    """Where rate-limit tokens and image counts live (memory or Redis); see the module docstring."""

    async def take_request(self, key_id: str, limits: KeyLimits, now: float) -> Decision | None:
        """Take one request from the key's token bucket. None when limits.rps is None.
        Raises RateLimited(detail, retry_after=seconds until one token is back) when empty (nothing taken)."""
        ...

    async def take_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> list[Decision]:
        """Charge n images to the key's day and month counters (only those set), both or neither;
        raises QuotaExceeded (retry_after: until that window resets) when either would go over."""
        ...

    async def refund_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> None:
        """Give back n images charged at `now` (a prediction that failed after admission); never below 0."""
        ...

    async def close(self) -> None:
        """Release connections (nothing to do in memory)."""
        ...


# --- pure logic shared by both backends -------------------------------------------------------


def _rate(limits: KeyLimits) -> tuple[float, int] | None:
    """The bucket's refill rate and capacity, or None when the key has no rate limit."""
    if limits.rps is None:
        return None
    if limits.rps <= 0:
        raise ValueError(f"rps must be > 0, not {limits.rps}")
    return limits.rps, max(1, limits.burst if limits.burst is not None else math.ceil(limits.rps))


def _refill(tokens: float, ts: float, now: float, rps: float, burst: int) -> tuple[float, float]:
    # a `now` older than the stored time (clock skew between replicas) refills nothing
    return (min(float(burst), tokens + (now - ts) * rps), now) if now > ts else (min(float(burst), tokens), ts)


def _bucket_decision(ok: bool, tokens: float, rps: float, burst: int) -> Decision:
    """The decision for a bucket left holding ``tokens``; raises RateLimited when the take was refused."""
    if not ok:
        err = RateLimited(
            f"rate limit of {rps:g} requests/s (burst {burst}) exceeded", retry_after=max(0.0, (1 - tokens) / rps)
        )
        err.headers = ratelimit_headers([Decision("rps", burst, 1, 0, max(0.0, (burst - tokens) / rps))])
        raise err
    return Decision("rps", burst, 1, max(0, math.floor(tokens + _EPS)), max(0.0, (burst - tokens) / rps))


@dataclass(frozen=True)
class _Window:
    """One quota's current window: ``label`` (its start, e.g. 2026-12-02 or 2026-12) names the counter."""

    policy: str
    limit: int
    label: str
    start: float
    end: float

    def decision(self, used: int, now: float) -> Decision:
        return Decision(
            self.policy, self.limit, round(self.end - self.start), max(0, self.limit - used), max(0.0, self.end - now)
        )


_WINDOWS: dict[tuple[int | None, int | None, int], list[_Window]] = {}


def _windows(limits: KeyLimits, now: float) -> list[_Window]:
    """The set quotas' windows containing ``now``: the UTC day, then the UTC calendar month.

    Remembered per UTC day and pair of quotas (POSIX time has 86,400 s in every day), so a
    request does not build dates: this runs on every limited key's prediction.
    """
    key = (limits.images_per_day, limits.images_per_month, math.floor(now / 86400))
    found = _WINDOWS.get(key)
    if found is None:
        if len(_WINDOWS) >= 4096:
            _WINDOWS.clear()
        found = _WINDOWS[key] = _build_windows(limits, now)
    return found


def _build_windows(limits: KeyLimits, now: float) -> list[_Window]:
    t = datetime.fromtimestamp(now, UTC)
    out: list[_Window] = []
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    if limits.images_per_day is not None:
        end = day + timedelta(days=1)
        out.append(_Window("day", limits.images_per_day, f"{day:%Y-%m-%d}", day.timestamp(), end.timestamp()))
    if limits.images_per_month is not None:
        end = (month + timedelta(days=32)).replace(day=1)
        out.append(_Window("month", limits.images_per_month, f"{month:%Y-%m}", month.timestamp(), end.timestamp()))
    return out


def _refusal(windows: Sequence[_Window], used: Sequence[int], n: int, now: float) -> QuotaExceeded | None:
    """The error for a charge of ``n`` on counters at ``used``, or None when it fits every quota.

    When several would overflow, the one that resets last is named: retrying earlier would fail anyway.
    """
    over = [(w, u) for w, u in zip(windows, used, strict=True) if u + n > w.limit]
    if not over:
        return None
    w, u = max(over, key=lambda wu: wu[0].end)
    left = max(0, w.limit - u)
    name = "daily" if w.policy == "day" else "monthly"
    err = QuotaExceeded(
        f"{name} image quota of {w.limit} exceeded: {left} left, {n} requested", retry_after=max(0.0, w.end - now)
    )
    err.headers = ratelimit_headers([w.decision(u, now)])
    return err


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"image count must be >= 0, not {n}")


# --- embedded mode ---------------------------------------------------------------------------


class MemoryCounters:
    """Counters in plain dicts for one process (embedded mode).

    No take awaits anything, so one event loop never interleaves two takes. Entries of past windows
    and buckets that are full again are swept lazily (once a minute of ``now``), so memory tracks the
    active keys, not the days gone by.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (tokens, ts, full again at)
        self._used: dict[tuple[str, str, float, float], int] = {}  # (key, policy, start, end) -> images
        self._next_sweep = -math.inf

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        self._buckets = {k: b for k, b in self._buckets.items() if b[2] >= now}
        self._used = {s: u for s, u in self._used.items() if s[3] + _GRACE_S >= now}

    async def take_request(self, key_id: str, limits: KeyLimits, now: float) -> Decision | None:
        """See :meth:`QuotaCounters.take_request`."""
        rate = _rate(limits)
        if rate is None:
            return None
        rps, burst = rate
        self._sweep(now)
        tokens, ts, _ = self._buckets.get(key_id, (float(burst), now, now))
        tokens, ts = _refill(tokens, ts, now, rps, burst)
        ok = tokens + _EPS >= 1
        if ok:
            tokens = max(0.0, tokens - 1)
        self._buckets[key_id] = (tokens, ts, ts + (burst - tokens) / rps)
        return _bucket_decision(ok, tokens, rps, burst)

    async def take_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> list[Decision]:
        """See :meth:`QuotaCounters.take_images`."""
        _check_n(n)
        self._sweep(now)
        windows = _windows(limits, now)
        slots = [(key_id, w.policy, w.start, w.end) for w in windows]
        used = [self._used.get(s, 0) for s in slots]
        if (err := _refusal(windows, used, n, now)) is not None:
            raise err
        for s, u in zip(slots, used, strict=True):
            self._used[s] = u + n
        return [w.decision(u + n, now) for w, u in zip(windows, used, strict=True)]

    async def refund_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> None:
        """See :meth:`QuotaCounters.refund_images`."""
        _check_n(n)
        for w in _windows(limits, now):
            slot = (key_id, w.policy, w.start, w.end)
            if slot in self._used:
                self._used[slot] = max(0, self._used[slot] - n)

    async def close(self) -> None:
        """Nothing to release."""


# --- cluster mode ----------------------------------------------------------------------------

# KEYS[1] the bucket hash; ARGV now, rps, burst. Uses the caller's clock (injectable), not Redis's.
# Numbers go back as strings: Redis truncates Lua numbers to integers.
_BUCKET_LUA = """
local now, rps, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(s[1]), tonumber(s[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
if now > ts then tokens, ts = tokens + (now - ts) * rps, now end
tokens = math.min(burst, tokens)
local ok = 0
if tokens + 1e-9 >= 1 then tokens, ok = math.max(0, tokens - 1), 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rps * 1000) + 1000)
return {ok, string.format('%.17g', tokens)}
"""

# KEYS the set quotas' counters; ARGV n, then limit and ttl (s) per key. Returns {1, used after...}
# or, when any would go over, {0, used before...} with nothing charged.
_IMAGES_LUA = """
local n = tonumber(ARGV[1])
local used, ok = {}, 1
for i, key in ipairs(KEYS) do
  used[i] = tonumber(redis.call('GET', key) or '0')
  if used[i] + n > tonumber(ARGV[2 * i]) then ok = 0 end
end
if ok == 1 then
  for i, key in ipairs(KEYS) do
    used[i] = redis.call('INCRBY', key, n)
    redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1]))
  end
end
return {ok, unpack(used)}
"""

# KEYS the counters; ARGV n. A counter already gone (its window expired) stays gone.
_REFUND_LUA = """
local n = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local v = tonumber(redis.call('GET', key))
  if v ~= nil then
    if v > n then redis.call('DECRBY', key, n) else redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1
"""


class RedisCounters:
    """Counters in Redis (cluster mode): every server process sharing one Redis shares one budget.

    Each take is one round trip running a Lua script, so check-and-charge is atomic across processes.
    Keys: ``{prefix}{key_id}:rps`` (hash: tokens, ts) and ``{prefix}{key_id}:day:2026-12-02`` /
    ``{prefix}{key_id}:month:2026-12`` (integers), each expiring a little after it stops mattering.
    """

    def __init__(self, url: str, prefix: str = "imaas:quota:") -> None:
        import redis.asyncio  # only cluster mode needs the client

        # short timeouts: a Redis that went away costs a request a second at most, never a hang
        self._redis: Redis = redis.asyncio.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._prefix = prefix
        self._bucket: AsyncScript = self._redis.register_script(_BUCKET_LUA)
        self._images: AsyncScript = self._redis.register_script(_IMAGES_LUA)
        self._refund: AsyncScript = self._redis.register_script(_REFUND_LUA)

    def _keys(self, key_id: str, windows: Sequence[_Window]) -> list[str]:
        return [f"{self._prefix}{key_id}:{w.policy}:{w.label}" for w in windows]

    async def take_request(self, key_id: str, limits: KeyLimits, now: float) -> Decision | None:
        """See :meth:`QuotaCounters.take_request`."""
        rate = _rate(limits)
        if rate is None:
            return None
        rps, burst = rate
        res: list[Any] = await self._call(
            self._bucket, keys=[f"{self._prefix}{key_id}:rps"], args=[repr(now), repr(rps), burst]
        )
        return _bucket_decision(int(res[0]) == 1, float(res[1]), rps, burst)

    async def take_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> list[Decision]:
        """See :meth:`QuotaCounters.take_images`."""
        _check_n(n)
        windows = _windows(limits, now)
        if not windows:
            return []
        args: list[int] = [n]
        for w in windows:
            args += [w.limit, math.ceil(w.end - now) + _GRACE_S]
        res: list[Any] = await self._call(self._images, keys=self._keys(key_id, windows), args=args)
        used = [int(u) for u in res[1:]]
        if int(res[0]) != 1:
            raise _refusal(windows, used, n, now) or QuotaExceeded("image quota exceeded")  # `or`: never None here
        return [w.decision(u, now) for w, u in zip(windows, used, strict=True)]

    async def refund_images(self, key_id: str, limits: KeyLimits, n: int, now: float) -> None:
        """See :meth:`QuotaCounters.refund_images`."""
        _check_n(n)
        windows = _windows(limits, now)
        if windows and n:
            await self._call(self._refund, keys=self._keys(key_id, windows), args=[n])

    async def _call(self, script: AsyncScript, **kwargs: Any) -> Any:
        try:
            return await script(**kwargs)
        except self._errors as exc:
            raise CountersUnavailable(f"the quota counters do not answer ({type(exc).__name__}); retry") from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def open_counters(redis_url: str | None) -> QuotaCounters:
    """The counters for a deployment: in memory when ``redis_url`` is None, else shared in Redis."""
    return MemoryCounters() if redis_url is None else RedisCounters(redis_url)


def ratelimit_headers(decisions: Sequence[Decision]) -> dict[str, str]:
    """IETF draft-ietf-httpapi-ratelimit-headers (structured-field form, draft 08+):
    RateLimit-Policy: "rps";q=10;w=1, "day";q=1000;w=86400
    RateLimit: "day";r=0;t=3600   <- only the most constrained one (lowest remaining/limit; ties: the longest reset)
    Empty dict for no decisions.

    Example::

        ratelimit_headers([Decision("day", 1000, 86400, 0, 3599.2)])
        # {"RateLimit-Policy": '"day";q=1000;w=86400', "RateLimit": '"day";r=0;t=3600'}
    """
    if not decisions:
        return {}
    worst = min(decisions, key=lambda d: (d.remaining / d.limit if d.limit > 0 else 0.0, -d.reset_s))
    return {
        "RateLimit-Policy": ", ".join(f'"{d.policy}";q={d.limit};w={d.window_s}' for d in decisions),
        "RateLimit": f'"{worst.policy}";r={worst.remaining};t={math.ceil(worst.reset_s)}',
    }
