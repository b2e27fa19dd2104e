"""One rate budget for many crawler processes: the rate controller's state kept in Redis.

Why
===
Spotify counts calls per developer account in a rolling window, so N processes (on one host or
many) that each ran their own :class:`~spotify_ingest.ratecontrol.RateController` would each learn
"the limit" from their own count, together send N times too much, and trip it again and again
(every 429 pauses only the worker that got it, while the others keep sending into the Retry-After
and earn doubling penalties). Workers that share one account must share one budget. More workers
never make a crawl faster; they share the work (CPU, database writes, latency) and survive the
loss of one of them.

The algorithm
=============
:class:`SharedRateController` is the same controller as ``ratecontrol.py`` (read its docstring
first), with its state in Redis instead of in one process, so the fleet behaves like ONE
controller. Each step is a Lua script (``register_script``: atomic, one round trip), and every
time is Redis's clock (``TIME``), so the hosts' clocks never matter.

**Shared state.** Per (client id, API base) three keys, ``<prefix>:{<digest>}:log``, ``:state``
and ``:flight``
(``digest`` = the first 16 hex digits of SHA-256 of client id and API base: the client id never
appears in Redis; the braces keep both keys in one Redis Cluster slot):

* ``log``: a sorted set, the sliding log of every worker's sends (member: ticket sequence number,
  score: send time on Redis's clock), kept ``2 W + margin`` long. In-flight requests count; a
  refused request is removed (the server did not log it either); a request that got no response
  stays (the server may have logged it).
* ``state``: a hash with the learned bounds ``lo`` (proven by successes: ``L >= lo``) and ``hi``
  (proven by a 429: ``L <= hi``), the mode (COLD / HOLD / PROBE), the cap ``target``, the shared
  pacing slot ``next_send``, the shared pause ``paused`` (Retry-After), the jitter margin (from the
  round-trip times every worker reports) and the probe schedule.
* ``flight``: a sorted set of the COLD tickets still in flight, every worker's (a ticket whose
  outcome never came leaves after ten round trips). The ramp keeps at most ``1 + max(2, 5 % of
  lo)`` in flight, as the local controller does ("Bounded overshoot" there): the server refuses
  whatever arrives during the Retry-After of the ramp's first 429, and all of them together are
  what that 429 may cost.

**acquire** (the script a worker runs for each request): if Redis's ``now`` is before ``paused``
or before ``next_send``, answer "wait this long"; if a probe is due, start it; count the log over
the exact window ``(now - W, now]`` and over ``W + margin``; if the capped count (``W + margin``
in COLD/HOLD, exact in PROBE, as in the local controller) is at ``target``, answer "wait until the
entry that must leave has left"; otherwise record the send (``ZADD``), set ``next_send = now +
W / (target * k)`` and grant a ticket carrying ``count_before`` (the exact window count when it
left). ``k`` is 2 in COLD (the count doubles every quarter window), ``catchup`` (2.25) while the
count is below the cap (refilling what a pause left), ``1 + pace_allowance`` at the cap. Because
``next_send`` is one value for the whole fleet, sends are evenly spaced across workers: no worker
can burst because another was idle.

**on_success** (script): the request found room, so ``L >= n + 1`` with ``n`` what the server
had logged when it arrived; we estimate ``n`` as the log entries sent before it that were still in
the window at its estimated arrival (send time + a quarter of its round trip, as the local
controller assumes; at most ``count_before``). Raise the shared ``lo`` (and drop ``hi`` if that
passes it); in a gallop, double the step; in HOLD, a pass at the cap confirms the level; add the
round-trip time to the shared jitter estimate.

**on_rate_limited** (script): remove the refused request from the log; ``paused = max(paused,
now + Retry-After)`` (one window if none): every worker stops at its next acquire (the worker that
got the 429 stops at once, locally). Then learn, exactly as the local controller does, unless the
request was sent before the current pause began (an "echo" of the 429 that started it) or before
the last evidence reset: the end of the COLD ramp (loose bounds, then a gap probe pins ``L``), a
failed probe (HOLD at the refused count: the limit is pinned), jitter at a cap that kept passing
(widen the margin; twice within three windows: ``lo - 1``), or a drop (the limit went down:
``lo = 0.7 x count``, then a gap probe up to the fresh ``hi``). The count of a refused request is
the log at its estimated arrival, not at its grant (a request from a busy worker that left late
met a fuller window), and a drop needs it more than 3 % below ``lo``. After any such 429 the
tickets still in flight carry no evidence (their counts included the refused request).

**Probing** is shared too: one fleet-wide schedule (``probe_interval`` windows, from the same two
budgets as the local controller: throughput lost to a failed probe's pause and the share of 429s),
so N workers probe as gently as one. A state untouched for ``idle_windows`` windows (a crawl that
was stopped) is re-warmed: HOLD 5 % under what it knew, then a gap probe.

**What the local controller has that this one leaves out**: the per-ticket arrival-order estimate
(here only the reported request's own round trip is known, not every ticket's), the Retry-After
bounds after a drop, and the quiet stretch (a failed probe's pause costs throughput here; the
probe interval budgets it). The warm start from the store (the estimate the crawl saved) seeds a
fresh shared state.

Redis going away
================
Without Redis the workers can no longer know what the others send, and a worker falling back to a
local controller would run at the whole account's limit by itself (N times too fast together,
with doubling penalties). So the choice is to STOP: every Redis error (after two quick retries,
which ride out a dropped connection, not a Redis restart) becomes a
:class:`~spotify_ingest.errors.StoreError` (exit 4, one line) at the next ``acquire``; the crawl
stops as for any store error, with its state saved, and the same command resumes once Redis is
back. A ``--redis`` URL that cannot be parsed is a :class:`~spotify_ingest.errors.UsageError`
(exit 2). Likewise a shared pause longer than ``--max-wait`` (another worker's long Retry-After,
or a spent quota) raises :class:`~spotify_ingest.errors.MustWaitError` (exit 75) in every
worker, not only in the one that got the 429.

The ``on_*`` callbacks are synchronous (the client's protocol): each updates the local view at
once and sends its script in a background task; their errors surface at the next ``acquire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from .errors import MustWaitError, StoreError, UsageError
from .ratecontrol import LimitEstimate

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "SharedRateController",
    "SharedTicket",
    "check_redis",
    "check_redis_url",
    "describe_redis_url",
    "redis_error",
    "shared_keys",
]

logger = logging.getLogger("spotify_ingest.shared_rate")

DEFAULT_KEY_PREFIX = "spotify-ingest:rate"

_INFLIGHT, _ACCEPTED, _REFUSED, _LOST = 0, 1, 2, 3
_MODE_NAMES = ("cold", "hold", "probe")

# ------------------------------------------------------------------------------------ Lua
# Every script starts with _PRELUDE: it reads the clock and the state, and defines the policy.
# ARGV[1..13] are the configuration (used when the state is created), ARGV[14..] the script's
# own arguments. Numbers are stored with 6 decimals (Lua's tostring keeps only 14 digits).
_PRELUDE = """
local S, LOG, FLY = KEYS[1], KEYS[2], KEYS[3]
local NEVER = 1e15
local COLD, HOLD, PROBE = 0, 1, 2
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local CFG_W = tonumber(ARGV[1])
local INITIAL = tonumber(ARGV[2])
local ALPHA = tonumber(ARGV[3])
local CATCHUP = tonumber(ARGV[4])
local DROP = tonumber(ARGV[5])
local UTIL_BUDGET = tonumber(ARGV[6])
local REFUSAL_BUDGET = tonumber(ARGV[7])
local MIN_PROBE = tonumber(ARGV[8])
local MAX_PROBE = tonumber(ARGV[9])
local TTL = tonumber(ARGV[10])
local WARM_LO = tonumber(ARGV[11])
local WARM_HI = tonumber(ARGV[12])
local IDLE = tonumber(ARGV[13])
local ARRIVAL_SHARE = 0.25  -- share of its round trip after which a request reaches the server
local OVERSHOOT_SHARE = 0.05  -- of lo: refusals the cold ramp's first 429 may bring with it

local F = {'w', 'lo', 'lo_at', 'hi', 'hi_exp', 'mode', 'target', 'gallop', 'delta', 'probe_k',
  'next_probe', 'epoch', 'seq', 'samples', 'next_send', 'paused', 'pause_start', 'last_ra',
  'gap_pending', 'confirm_seq', 'gap_any', 'margin', 'm_extra', 'm_extra_at', 'rtt_n',
  'rtt_mean', 'rtt_dev', 'last_jitter', 'probes', 'refusals', 'seen'}
local raw = redis.call('HMGET', S, unpack(F))
local st = {}
for i = 1, #F do st[F[i]] = tonumber(raw[i]) end
local fresh = st.w == nil

local function fmt(x)
  if x == math.floor(x) and math.abs(x) < 1e16 then return string.format('%d', x) end
  return string.format('%.6f', x)
end

local function save()
  local args = {}
  for i = 1, #F do
    args[#args + 1] = F[i]
    args[#args + 1] = fmt(st[F[i]])
  end
  redis.call('HSET', S, unpack(args))
  redis.call('EXPIRE', S, TTL)
  redis.call('EXPIRE', LOG, TTL)
  redis.call('EXPIRE', FLY, TTL)
end

local function update_margin()
  local w = st.w
  if st.m_extra > 0 then
    st.m_extra = st.m_extra * 0.5 ^ ((now - st.m_extra_at) / (20 * w))
    st.m_extra_at = now
  end
  st.margin = math.min(0.1 * w, math.max(0.003 * w, 2.5 * st.rtt_dev + 0.001 + st.m_extra))
end

local function observe_rtt(rtt)
  if rtt < 0 then return end
  if st.rtt_n == 0 then
    st.rtt_mean = rtt
    st.rtt_dev = rtt / 4
  else
    local err = rtt - st.rtt_mean
    st.rtt_mean = st.rtt_mean + err / 16
    st.rtt_dev = st.rtt_dev + (math.abs(err) - st.rtt_dev) / 16
  end
  st.rtt_n = st.rtt_n + 1
  if st.rtt_n < 32 or st.rtt_n % 8 == 0 then update_margin() end
end

local function probe_interval()
  local by_util = (st.last_ra / st.w) ^ 2 / UTIL_BUDGET
  local by_refusals = 1 / (REFUSAL_BUDGET * math.max(1, st.lo))
  return math.min(MAX_PROBE, math.max(MIN_PROBE, by_util, by_refusals))
end

local function hold()
  st.mode = HOLD
  st.target = math.max(1, st.lo)
end

local function schedule_probe()
  st.gap_pending = 0
  st.next_probe = now + probe_interval() * st.w
  st.hi_exp = st.next_probe
end

local function await_confirmation()
  st.gap_pending = 1
  st.confirm_seq = st.seq + 1
  st.next_probe = NEVER
  st.hi_exp = NEVER
end

local function confirmed()
  local need = 0
  if st.gap_any == 0 and st.hi >= 0 then need = math.max(1, math.ceil(0.02 * st.hi)) end
  st.gap_any = 0
  if st.hi >= 0 and st.hi - st.lo > need then
    st.gap_pending = 0
    st.next_probe = now
    st.hi_exp = NEVER
  else
    schedule_probe()
  end
end

local function start_probe()
  st.next_probe = NEVER
  st.mode = PROBE
  st.probes = st.probes + 1
  if st.hi >= 0 and now < st.hi_exp and st.hi > st.lo then
    st.gallop = 0
    st.target = st.hi
    st.probe_k = 1 + math.max(ALPHA, (st.hi - st.lo) / st.hi)
  else
    st.hi = -1
    st.hi_exp = NEVER
    st.gallop = 1
    st.delta = 1
    st.target = st.lo + 1
    st.probe_k = 1 + math.max(ALPHA, 4 / st.target)
  end
end

local function retarget()
  if st.mode == COLD then
    st.target = math.max(INITIAL, 2 * st.lo)
  elseif st.mode == HOLD then
    st.target = math.max(1, st.lo)
  elseif st.gallop == 1 then
    while st.lo >= st.target do
      st.delta = st.delta * 2
      st.target = st.lo + st.delta
    end
    st.probe_k = 1 + math.max(ALPHA, 4 * st.delta / st.target)
  elseif st.lo >= st.target then
    hold()
    schedule_probe()
  end
end

local function warm(lo, hi)
  st.lo = math.max(1, lo)
  st.lo_at = now
  if hi >= st.lo then st.hi = hi else st.hi = st.lo end
  hold()
  await_confirmation()
  st.confirm_seq = 0
  st.gap_any = 1
end

if fresh then
  st = {w = CFG_W, lo = 0, lo_at = -NEVER, hi = -1, hi_exp = NEVER, mode = COLD,
    target = INITIAL, gallop = 0, delta = 1, probe_k = 1 + ALPHA, next_probe = NEVER, epoch = 0,
    seq = 0, samples = 0, next_send = 0, paused = 0, pause_start = -NEVER, last_ra = 1,
    gap_pending = 0, confirm_seq = 0, gap_any = 0, margin = math.min(0.05, 0.02 * CFG_W),
    m_extra = 0, m_extra_at = 0, rtt_n = 0, rtt_mean = 0, rtt_dev = 0, last_jitter = -NEVER,
    probes = 0, refusals = 0, seen = now}
  if WARM_LO > 0 then warm(WARM_LO, WARM_HI) end
elseif now - st.seen > IDLE * st.w and st.lo > 0 and now >= st.paused then
  -- Nobody sent for a long time: what we knew may be stale. Hold a little under it, then probe.
  local known = st.lo
  if st.hi >= 0 and st.hi < known then known = st.hi end
  warm(known - math.max(1, math.ceil(0.05 * known)), known)
end

-- The cold ramp's requests in flight, fleet-wide: at most one more than the overshoot allowed
-- (as in ratecontrol.py, "Bounded overshoot"). A ticket whose outcome never came is forgotten
-- after ten round trips (at least a second).
local function cold_flight_full()
  redis.call('ZREMRANGEBYSCORE', FLY, '-inf', '(' .. fmt(now - math.max(1, 10 * st.rtt_mean)))
  local overshoot = math.max(2, math.floor(OVERSHOOT_SHARE * st.lo))
  local growth = math.floor(1.2 * st.lo * st.rtt_mean / st.w)
  return redis.call('ZCARD', FLY) >= 1 + math.max(overshoot, growth)
end

local function counts()
  local w = st.w
  local count = redis.call('ZCOUNT', LOG, '(' .. fmt(now - w), '+inf')
  local n = redis.call('ZCOUNT', LOG, '(' .. fmt(now - w - st.margin), '+inf')
  return count, n
end

local function reply(code, seq, x, count, n, mode)
  return {code, seq, fmt(x), count, n, mode, st.lo, st.hi, st.target, fmt(st.paused), fmt(now),
    fmt(st.w), fmt(st.margin), st.samples, st.probes, st.refusals, st.mode}
end
"""

_LUA_ACQUIRE = (
    _PRELUDE
    + """
st.seen = now
local w = st.w
redis.call('ZREMRANGEBYSCORE', LOG, '-inf', '(' .. fmt(now - 2 * w - st.margin))
if now >= st.next_probe and now >= st.paused then start_probe() end
local count, n = counts()
local wait = 0
if now < st.paused then
  wait = st.paused - now
elseif now < st.next_send then
  wait = st.next_send - now
elseif st.mode == COLD and cold_flight_full() then
  wait = math.max(0.002, 0.25 * st.rtt_mean)  -- until another worker's response, about
else
  local capped, edge, span = n, now - w - st.margin, w + st.margin
  if st.mode == PROBE then capped, edge, span = count, now - w, w end
  if capped >= st.target then
    local e = redis.call('ZRANGEBYSCORE', LOG, '(' .. fmt(edge), '+inf', 'WITHSCORES',
      'LIMIT', capped - st.target, 1)
    wait = tonumber(e[2]) + span - now
    if st.next_probe - now < wait then wait = st.next_probe - now end
    if wait < 0.0001 then wait = 0.0001 end
  end
end
if wait > 0 then
  save()
  return reply(0, 0, wait, count, n, st.mode)
end
st.seq = st.seq + 1
local seq = st.seq
redis.call('ZADD', LOG, fmt(now), tostring(seq))
if st.mode == COLD then redis.call('ZADD', FLY, fmt(now), tostring(seq)) end
local capped = n
if st.mode == PROBE then capped = count end
local k = 1 + ALPHA
if st.mode == COLD then
  k = 2
elseif st.mode == PROBE and count >= st.lo then
  k = st.probe_k
elseif capped + 1 < st.target then
  k = CATCHUP
end
st.next_send = now + w / (st.target * k)
save()
return reply(1, seq, now, count, n, st.mode)
"""
)

_LUA_SUCCESS = (
    _PRELUDE
    + """
local seq, sent, cb, cc, tmode, rtt = tonumber(ARGV[14]), tonumber(ARGV[15]),
  tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
redis.call('ZREM', FLY, tostring(seq))
if not fresh and seq >= st.epoch then
  st.samples = st.samples + 1
  -- The server had room when the request ARRIVED: count what was logged before it was sent and
  -- was still in the window at its (estimated) arrival. Never more than count_before.
  local arrive = sent + ARRIVAL_SHARE * math.max(0, rtt)
  local c = 1 + redis.call('ZCOUNT', LOG, '(' .. fmt(arrive - st.w), '(' .. fmt(sent))
  if c > cb + 1 then c = cb + 1 end
  if c > st.lo then
    st.lo = c
    st.lo_at = now
    if st.hi >= 0 and c > st.hi then
      st.hi = -1
      st.hi_exp = NEVER
    end
    retarget()
  end
  if tmode == HOLD and cc + 1 >= st.target then
    st.lo_at = now
    if st.gap_pending == 1 and seq >= st.confirm_seq then confirmed() end
  end
end
observe_rtt(rtt)
save()
local count, n = counts()
return reply(-1, seq, 0, count, n, st.mode)
"""
)

_LUA_REFUSED = (
    _PRELUDE
    + """
local seq, sent, cb, cc, tmode, ra_in, rtt = tonumber(ARGV[14]), tonumber(ARGV[15]),
  tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19]),
  tonumber(ARGV[20])
redis.call('ZREM', LOG, tostring(seq))
redis.call('ZREM', FLY, tostring(seq))
-- What the server had logged when it refused: the log at the request's estimated ARRIVAL (a
-- request that left late, e.g. from a busy worker, met a fuller window than at its grant).
local arrive = sent + ARRIVAL_SHARE * math.max(0, rtt)
local at_arrival = redis.call('ZCOUNT', LOG, '(' .. fmt(arrive - st.w), fmt(arrive))
if at_arrival > cb then cb = at_arrival end
observe_rtt(rtt)
local w = st.w
local ra = w
if ra_in >= 0 then ra = ra_in end
if ra_in > 0 then st.last_ra = ra_in end
local echo = sent < st.pause_start
if not echo then st.pause_start = now end
if now + ra + 0.001 > st.paused then st.paused = now + ra + 0.001 end

local function learn()
  local m = math.max(1, cb)
  local lo = st.lo
  local slack = math.max(2, math.ceil(0.03 * lo), math.ceil(2 * lo / w * st.margin))
  if st.hi < 0 or m < st.hi or now >= st.hi_exp then st.hi = m end
  local noise = math.floor(0.1 * st.rtt_mean * st.target * (1 + ALPHA) / w)
  if tmode == COLD then
    if st.mode == COLD then
      -- The end of the ramp: at its rate requests reorder, so take the bounds loosely.
      local nz = math.floor(2 * st.target / w * st.margin + 0.5)
      st.hi = m + nz
      st.lo = math.max(1, math.min(lo, m) - nz)
      st.epoch = st.seq + 1
      hold()
      await_confirmation()
    end
    return 'cold'
  end
  if tmode == PROBE or st.mode == PROBE then
    if m >= lo - slack then
      st.lo = math.max(1, math.min(lo, m - noise))
      st.epoch = st.seq + 1
      if st.mode == PROBE then
        hold()
        await_confirmation()
      end
      return 'probe'
    end
  elseif m >= lo - slack then
    if now - st.lo_at <= 2 * w then
      local spread = math.max(2 * st.rtt_dev, 0.001)
      st.m_extra = math.min(2 * spread, st.m_extra + 0.25 * spread)
      st.m_extra_at = now
      update_margin()
    end
    if now - st.lo_at > 2 * w or now - st.last_jitter < 3 * w then
      st.lo = math.max(1, math.min(lo - 1, m))
      st.target = st.lo
    end
    st.last_jitter = now
    st.epoch = st.seq + 1
    return 'jitter'
  end
  -- The limit went down: cut, forget what is in flight, refill the gap once confirmed.
  st.lo = math.max(1, math.floor(DROP * math.min(m, cc)))
  st.lo_at = now
  st.epoch = st.seq + 1
  hold()
  await_confirmation()
  st.gap_any = 1
  return 'drop'
end

local kind = 'echo'
if not fresh and seq >= st.epoch and not echo then
  st.samples = st.samples + 1
  kind = learn()
end
st.refusals = st.refusals + 1
save()
redis.call('HINCRBY', S, 'refused_' .. kind, 1)
local count, n = counts()
return reply(-1, seq, 0, count, n, st.mode)
"""
)

_LUA_RELEASE = (
    _PRELUDE
    + """
redis.call('ZREM', LOG, ARGV[14])
redis.call('ZREM', FLY, ARGV[14])
local count, n = counts()
if not fresh then save() end
return reply(-1, 0, 0, count, n, st.mode)
"""
)

_LUA_PAUSE = (
    _PRELUDE
    + """
local ra = tonumber(ARGV[14])
if now + ra + 0.001 > st.paused then st.paused = now + ra + 0.001 end
save()
local count, n = counts()
return reply(-1, 0, 0, count, n, st.mode)
"""
)

_LUA_SNAPSHOT = (
    _PRELUDE
    + """
if fresh then
  if ARGV[14] ~= '1' then return {-2} end
  save()  -- joining a budget that does not exist yet creates it (with our warm start)
end
local count, n = counts()
local r = reply(-1, 0, 0, count, n, st.mode)
r[#r + 1] = fmt(st.next_probe)
r[#r + 1] = fmt(st.rtt_mean)
for _, kind in ipairs({'cold', 'probe', 'jitter', 'drop', 'echo'}) do
  r[#r + 1] = tonumber(redis.call('HGET', S, 'refused_' .. kind) or '0')
end
return r
"""
)


# ------------------------------------------------------------------------------------ Python


def shared_keys(client_id: str, api_base: str, prefix: str = DEFAULT_KEY_PREFIX) -> tuple[str, str]:
    """The (state, log) keys of one budget: per client id (hashed) and API base."""
    digest = hashlib.sha256(f"{client_id}\n{api_base.rstrip('/')}".encode()).hexdigest()[:16]
    return f"{prefix}:{{{digest}}}:state", f"{prefix}:{{{digest}}}:log"


def describe_redis_url(url: str) -> str:
    """``url`` as it may be printed: the password (if any) becomes ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable Redis URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis_url(url: str) -> None:
    """``UsageError`` (one line) unless ``url`` is a Redis URL."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise UsageError(
            f"--redis {describe_redis_url(url)}: not a Redis URL (use redis://host:6379/0, "
            "rediss://... or unix:///path/to/redis.sock)"
        )


def check_redis(url: str) -> None:
    """Connect and PING (blocking): the one-line error a worker would give, before any starts."""
    import redis

    check_redis_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=5.0)
    except ValueError as exc:
        raise UsageError(f"--redis {describe_redis_url(url)}: {exc}") from None
    try:
        client.ping()
    except RedisError as exc:
        raise redis_error(describe_redis_url(url), exc, at_start=True) from None
    finally:
        client.close()


def redis_error(where: str, exc: BaseException, *, at_start: bool = False) -> StoreError:
    """The one-line error for a Redis failure (``at_start``: before the crawl began)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    what = f"shared rate budget: Redis at {where} failed ({type(exc).__name__}: {detail[:200]})"
    if at_start:
        return StoreError(f"{what}: start it, or fix --redis")
    return StoreError(
        f"{what}; this worker stopped rather than send without knowing what the others send. "
        "State is saved: run the same command again once Redis is back"
    )


class SharedTicket:
    """A permit for one request; hand it back through one of the controller's ``on_*`` methods."""

    __slots__ = ("count_before", "count_cap", "mode", "sent_at", "sent_local", "seq", "state")

    def __init__(
        self, seq: int, sent_at: float, count_before: int, count_cap: int, mode: int
    ) -> None:
        self.seq = seq
        self.sent_at = sent_at  # Redis clock
        self.sent_local = time.monotonic()
        self.count_before = count_before  # every worker's counted requests in (sent - W, sent)
        self.count_cap = count_cap  # ... in (sent - W - margin, sent)
        self.mode = mode
        self.state = _INFLIGHT

    def __repr__(self) -> str:
        return f"SharedTicket(seq={self.seq}, count={self.count_before})"


@dataclass
class _View:
    """The shared state as of the latest script reply (for estimate(), the display, tests)."""

    lo: int = 0
    hi: int = -1
    target: int = 0
    mode: int = 0
    paused: float = 0.0  # Redis clock
    window: float = 30.0
    margin: float = 0.0
    count: int = 0
    samples: int = 0
    probes: int = 0
    refusals: int = 0
    offset: float = 0.0  # Redis clock minus time.monotonic()
    known: bool = False


class _Waiter:
    __slots__ = ("fut",)

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None


class SharedRateController:
    """A rate controller whose window log, learned limit and pause live in Redis.

    Implements the client's controller protocol (``acquire`` / ``on_success`` /
    ``on_rate_limited`` / ``on_no_response`` / ``on_quota_exceeded`` / ``release``) and what the
    crawler reads (``estimate()``, ``window``, ``window_count()``, ``paused_until`` on
    ``time.monotonic()``). Every controller with the same Redis, ``key_prefix``, ``client_id`` and
    ``api_base`` shares one budget, in one process or many. Create it inside the event loop that
    uses it; ``await connect()`` first (it checks Redis and raises a one-line error), ``await
    aclose()`` at the end.

    ``max_wait`` (seconds, None: wait out any pause): a shared pause longer than this (another
    worker got a Retry-After above ``--max-wait``, or a quota 429) raises
    :class:`~spotify_ingest.errors.MustWaitError` from ``acquire``, as the 429 itself does in the
    worker that got it, so every worker stops with its state saved instead of sleeping for hours.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        client_id: str,
        api_base: str,
        window: float = 30.0,
        warm_start: LimitEstimate | None = None,
        max_concurrency: int = 16,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        initial_limit: int = 4,
        pace_allowance: float = 0.05,
        catchup: float = 2.25,
        drop_factor: float = 0.7,
        utilisation_budget: float = 0.01,
        refusal_budget: float = 0.002,
        min_probe_windows: float = 2.0,
        max_probe_windows: float = 6.0,
        idle_windows: float = 10.0,
        ttl: float = 86_400.0,
        max_wait: float | None = None,
        client: aioredis.Redis | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.where = describe_redis_url(redis_url)
        if client is None:
            check_redis_url(redis_url)
            try:
                client = aioredis.Redis.from_url(
                    redis_url,
                    socket_connect_timeout=3.0,
                    socket_timeout=5.0,
                    health_check_interval=0,
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
                    decode_responses=True,
                )
            except ValueError as exc:
                raise UsageError(f"--redis {self.where}: {exc}") from None
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis: aioredis.Redis = client
        state_key, log_key = shared_keys(client_id, api_base, key_prefix)
        # The cold ramp's requests in flight: beside the log, in the same Redis Cluster slot.
        self._keys = [state_key, log_key, log_key.removesuffix(":log") + ":flight"]
        self._w = float(window)
        self._max_conc = max_concurrency
        self._max_wait = max_wait
        warm_lo, warm_hi = 0, -1
        if warm_start is not None:
            scale = self._w / warm_start.window if warm_start.window > 0 else 1.0
            lower = warm_start.lower or warm_start.limit
            known = max(1, round(max(1, min(warm_start.limit, lower)) * scale))
            warm_lo = max(1, known - max(1, math.ceil(0.05 * known)))
            warm_hi = known if warm_start.upper is None else max(1, round(warm_start.upper * scale))
        self._config: list[float | int] = [
            self._w, max(1, initial_limit), pace_allowance, catchup, drop_factor,
            utilisation_budget, refusal_budget, min_probe_windows, max_probe_windows,
            max(1, round(ttl)), warm_lo, warm_hi, idle_windows,
        ]  # fmt: skip
        self._acquire_script = client.register_script(_LUA_ACQUIRE)
        self._success_script = client.register_script(_LUA_SUCCESS)
        self._refused_script = client.register_script(_LUA_REFUSED)
        self._release_script = client.register_script(_LUA_RELEASE)
        self._pause_script = client.register_script(_LUA_PAUSE)
        self._snapshot_script = client.register_script(_LUA_SNAPSHOT)
        self._view = _View(window=self._w)
        self._inflight = 0
        self._local_pause = -math.inf  # time.monotonic(): our own 429s pause us at once
        self._waiters: deque[_Waiter] = deque()
        self._background: set[asyncio.Task[None]] = set()
        self._error: StoreError | None = None
        self._warned_window = False
        self.requests = 0  # tickets granted to this process
        self.refused = 0  # 429s this process reported

    # ------------------------------------------------------------------ properties

    @property
    def window(self) -> float:
        return self._w

    @property
    def max_concurrency(self) -> int:
        return self._max_conc

    @property
    def in_flight(self) -> int:
        return self._inflight

    @property
    def paused_until(self) -> float:
        """``time.monotonic()`` time until which nothing may be sent (shared pause, ours)."""
        v = self._view
        shared = v.paused - v.offset if v.known else -math.inf
        return max(self._local_pause, shared)

    @property
    def target(self) -> int:
        return self._view.target

    @property
    def mode(self) -> str:
        return _MODE_NAMES[self._view.mode] if 0 <= self._view.mode < 3 else "?"

    @property
    def margin(self) -> float:
        return self._view.margin

    @property
    def keys(self) -> tuple[str, str]:
        """The Redis keys of this budget (state, log)."""
        return self._keys[0], self._keys[1]

    def window_count(self, now: float | None = None) -> int:
        """Every worker's requests in the last window, as of the latest reply from Redis."""
        return self._view.count

    def estimate(self) -> LimitEstimate:
        v = self._view
        limit = v.lo if v.lo > 0 else v.target
        if v.hi >= 0:
            limit = min(limit, v.hi)
        return LimitEstimate(
            limit=max(1, limit),
            lower=v.lo,
            upper=None if v.hi < 0 else v.hi,
            window=self._w,
            observed_at=time.time(),
            samples=v.samples,
        )

    # ------------------------------------------------------------------ life cycle

    async def connect(self) -> None:
        """Check that Redis answers and holds a compatible budget; one-line error if not."""
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise redis_error(self.where, exc, at_start=True) from None
        await self.refresh(join=True)

    async def flush(self) -> None:
        """Wait until every update sent in the background has reached Redis."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def aclose(self) -> None:
        """Wait briefly for outstanding updates, then close the connections (if ours)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=2.0)
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    async def refresh(self, *, join: bool = False) -> dict[str, Any]:
        """Read the shared state from Redis; also updates the local view.

        ``join``: create the budget (seeded by our warm start) if it does not exist yet; without
        it nothing changes in Redis and a missing budget reads as ``{}``.
        """
        try:
            raw = await self._snapshot_script(keys=self._keys, args=self._args([1 if join else 0]))
        except RedisError as exc:
            raise redis_error(self.where, exc) from None
        if raw[0] == -2:
            return {}
        self._absorb(raw)
        v = self._view
        kinds = ("cold", "probe", "jitter", "drop", "echo")
        return {
            "lo": v.lo,
            "hi": None if v.hi < 0 else v.hi,
            "target": v.target,
            "mode": self.mode,
            "window": v.window,
            "margin": v.margin,
            "count": v.count,
            "paused_for": max(0.0, v.paused - float(raw[10])),
            "samples": v.samples,
            "probes": v.probes,
            "refusals": v.refusals,
            "next_probe_in": float(raw[17]) - float(raw[10]),
            "rtt_mean": float(raw[18]),
            "refused_by_kind": {k: int(raw[19 + i]) for i, k in enumerate(kinds)},
        }

    async def reset(self) -> None:
        """Forget this budget in Redis (tests, or a deliberate fresh start)."""
        try:
            await self._redis.delete(*self._keys)
        except RedisError as exc:
            raise redis_error(self.where, exc) from None

    # ------------------------------------------------------------------ acquire

    async def acquire(self) -> SharedTicket:
        """Wait (FIFO within this process) for the shared pause, pacing and window; a ticket."""
        me = _Waiter()
        self._waiters.append(me)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._waiters[0] is not me or self._inflight >= self._max_conc:
                    me.fut = loop.create_future()
                    await me.fut
                    continue
                wait = self._local_pause - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                ticket, wait = await self._try_acquire()
                if ticket is not None:
                    self._waiters.popleft()
                    if self._waiters:
                        self._wake_head()
                    return ticket
                await asyncio.sleep(max(1e-4, wait))
        except BaseException:
            was_head = bool(self._waiters) and self._waiters[0] is me
            with contextlib.suppress(ValueError):
                self._waiters.remove(me)
            if was_head and self._waiters:
                self._wake_head()
            raise

    async def _try_acquire(self) -> tuple[SharedTicket | None, float]:
        try:
            raw = await self._acquire_script(keys=self._keys, args=self._args())
        except RedisError as exc:
            self._error = self._error or redis_error(self.where, exc)
            raise self._error from None
        self._absorb(raw)
        if int(raw[0]) != 1:
            paused_for = float(raw[9]) - float(raw[10])
            if self._max_wait is not None and paused_for > self._max_wait:
                raise MustWaitError(
                    f"the shared rate budget is paused for {paused_for:.0f} s (a worker was told "
                    f"to wait longer than --max-wait {self._max_wait:.0f} s, or the quota is "
                    "spent): try again after that",
                    wait_seconds=paused_for,
                )
            return None, float(raw[2])
        ticket = SharedTicket(int(raw[1]), float(raw[2]), int(raw[3]), int(raw[4]), int(raw[5]))
        self._inflight += 1
        self.requests += 1
        return ticket, 0.0

    # ------------------------------------------------------------------ outcomes

    def on_success(self, ticket: SharedTicket) -> None:
        """A response other than a 429 (4xx / 5xx too: the request reached the server)."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _ACCEPTED
        self._finish()
        rtt = time.monotonic() - ticket.sent_local
        self._spawn(
            self._success_script,
            [
                ticket.seq, _num(ticket.sent_at), ticket.count_before, ticket.count_cap,
                ticket.mode, _num(rtt),
            ],
        )  # fmt: skip

    def on_rate_limited(self, ticket: SharedTicket, retry_after: float | None) -> None:
        """A 429 of the window kind: pauses every worker; the caller replays the request."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _REFUSED
        self.refused += 1
        now = time.monotonic()
        ra = self._w if retry_after is None or retry_after < 0 else float(retry_after)
        self._local_pause = max(self._local_pause, now + ra + 0.001)
        self._finish()
        self._spawn(
            self._refused_script,
            [
                ticket.seq, _num(ticket.sent_at), ticket.count_before, ticket.count_cap,
                ticket.mode, -1 if retry_after is None else _num(retry_after),
                _num(now - ticket.sent_local),
            ],
        )  # fmt: skip

    def on_no_response(self, ticket: SharedTicket) -> None:
        """Transport failure: it stays in the shared log (the server may have counted it)."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _LOST
        self._finish()

    def on_quota_exceeded(self, ticket: SharedTicket, retry_after: float | None) -> None:
        """A quota 429: no evidence about the window; pauses every worker."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _LOST
        ra = self._w if retry_after is None or retry_after < 0 else float(retry_after)
        self._local_pause = max(self._local_pause, time.monotonic() + ra + 0.001)
        self._finish()
        self._spawn(self._release_script, [ticket.seq])  # the server did not count it
        self._spawn(self._pause_script, [_num(ra)])

    def pause_for(self, seconds: float) -> None:
        """Pause every worker for ``seconds``: a Retry-After learned elsewhere (an earlier run)."""
        seconds = max(0.0, seconds)
        self._local_pause = max(self._local_pause, time.monotonic() + seconds)
        self._spawn(self._pause_script, [_num(seconds)])

    def release(self, ticket: SharedTicket) -> None:
        """Give back a ticket whose request was never sent (cancelled, no token)."""
        if ticket.state != _INFLIGHT:
            return
        ticket.state = _LOST
        self._finish()
        self._spawn(self._release_script, [ticket.seq])

    # ------------------------------------------------------------------ internals

    def _args(self, extra: list[Any] | None = None) -> list[Any]:
        return [*self._config, *(extra or [])]

    def _finish(self) -> None:
        self._inflight -= 1
        if self._waiters:
            self._wake_head()

    def _wake_head(self) -> None:
        fut = self._waiters[0].fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _spawn(self, script: Any, extra: list[Any]) -> None:
        if self._error is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutting down): the window log expires by itself
            return
        task = loop.create_task(self._run_update(script, extra))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_update(self, script: Any, extra: list[Any]) -> None:
        try:
            raw = await script(keys=self._keys, args=self._args(extra))
        except RedisError as exc:
            self._error = self._error or redis_error(self.where, exc)
            if self._waiters:
                self._wake_head()
            return
        self._absorb(raw)

    def _absorb(self, raw: list[Any]) -> None:
        v = self._view
        redis_now = float(raw[10])
        v.offset = redis_now - time.monotonic()
        v.lo, v.hi, v.target = int(raw[6]), int(raw[7]), int(raw[8])
        v.paused = float(raw[9])
        v.margin = float(raw[12])
        v.count = int(raw[3]) if int(raw[0]) != 1 else int(raw[3]) + 1
        v.samples, v.probes, v.refusals, v.mode = (int(x) for x in raw[13:17])
        v.known = True
        w = float(raw[11])
        if w != self._w and not self._warned_window:
            self._warned_window = True
            logger.warning(
                "the shared budget in Redis uses a %gs window, this worker %gs: using %gs",
                w,
                self._w,
                w,
            )
        v.window = self._w = w


def _num(x: float) -> str:
    return f"{x:.6f}"
