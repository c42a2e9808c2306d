"""The Redis broker's keys and its Lua scripts: each state change that must be atomic is one
script, which Redis runs whole, with no other command between its steps.

Keys, under a prefix P (``zserve:`` unless the URL says ``?prefix=``):

- ``P job:<id>``: a hash, one field per ``JobRecord`` field, each value JSON (written by
  Python, so floats keep every digit; the scripts only compare ``status`` and read ``worker``,
  ``finished_at``), plus ``:seq``, the job's last event seq (and ``:idem``, ``:fp`` below);
- ``P ev:<id>``: a stream, one entry per event, whose id is ``<seq>-0`` and whose field ``e``
  holds the event as JSON (a resume is ``XRANGE`` from ``seq + 1``, a tail ``XREAD`` after
  ``<seq>-0``); and ``:fence``, the job's fencing token: 1 when created, raised when the job is
  taken from its owner (``REAP``), so that an owner that comes back after its lease ran out (a
  partition, a long pause) cannot write to it any more;
- ``P jobs``: a sorted set of every job id by ``created_at`` (listings, newest first, ties by
  id as ``ZREVRANGEBYSCORE`` gives them); ``P status:<status>``: the same, per status;
- ``P finished``: finished job ids by ``finished_at`` (0 when unset), for pruning;
- ``P owners``: a hash of unfinished jobs that have a worker -> that worker (lease checks);
- ``P leases``: a sorted set of workers by the time their lease runs out;
- ``P cancels``: a set of the jobs with a cancel request;
- ``P idem:<key>``: the id of the job created with the idempotency key ``<key>`` (whose hash
  holds the key in ``:idem`` and its request's fingerprint in ``:fp``); it expires and is pruned
  with that job.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CANCEL", "CREATE", "FINISH", "PRUNE", "PUBLISH", "REAP"]

# Helpers every script starts with. ARGV[1] is the prefix, ARGV[2] the job id; KEYS[1] the job's
# hash and KEYS[2] its stream (the other keys are named from the prefix).
_PRELUDE = """
local P, id, job, stream = ARGV[1], ARGV[2], KEYS[1], KEYS[2]
local OPEN = {['"queued"'] = true, ['"running"'] = true}

-- Set the fields given as ARGV[at], ARGV[at+1] (name, JSON value) n times; return the old
-- status and worker JSON when they changed, else nil.
local function set_fields(at, n)
  local old = redis.call('HMGET', job, 'status', 'worker')
  local old_status, old_worker = old[1], old[2]
  local status, worker = old_status, old_worker
  local args = {}
  for i = 0, n - 1 do
    local name, value = ARGV[at + 2 * i], ARGV[at + 2 * i + 1]
    args[#args + 1] = name
    args[#args + 1] = value
    if name == 'status' then status = value end
    if name == 'worker' then worker = value end
  end
  if #args > 0 then redis.call('HSET', job, unpack(args)) end
  if status ~= old_status then
    local created = redis.call('ZSCORE', P .. 'jobs', id)
    if old_status then redis.call('ZREM', P .. 'status:' .. cjson.decode(old_status), id) end
    redis.call('ZADD', P .. 'status:' .. cjson.decode(status), created, id)
  end
  if worker ~= old_worker or status ~= old_status then
    local who = worker and cjson.decode(worker) or ''
    if who == '' or not OPEN[status] then
      redis.call('HDEL', P .. 'owners', id)
    else
      redis.call('HSET', P .. 'owners', id, who)
    end
  end
end

-- Append the events ARGV[at..#ARGV] with the next seqs; return the first one's seq. ``own``
-- is given by the job's owner only: how many of its events it knows written. The job counts
-- them too (``:own``), so that a write retried after its answer was lost appends only the
-- events that are not there yet (the seqs returned for those are where that write put them,
-- when nothing came between).
local function append(at, own)
  local count = #ARGV - at + 1
  if count <= 0 then return 0 end
  local skip = 0
  if own then
    skip = math.min(count, math.max(0, tonumber(redis.call('HGET', job, ':own') or '0') - own))
    redis.call('HINCRBY', job, ':own', count - skip)
  end
  if skip == count then return tonumber(redis.call('HGET', job, ':seq')) - count + 1 end
  local first = redis.call('HINCRBY', job, ':seq', count - skip) - (count - skip) + 1
  for i = skip, count - 1 do
    redis.call('XADD', stream, (first + i - skip) .. '-0', 'e', ARGV[at + i])
  end
  return first - skip
end

-- Whether the writer's fencing token (ARGV[i], '' for none) is the job's: a writer holding an
-- older one had the job taken from it.
local function fenced(i)
  return ARGV[i] ~= '' and redis.call('HGET', job, ':fence') ~= ARGV[i]
end

-- Set the n fields from ARGV[at] (the finished status among them), append the terminal event
-- after them, index the job as finished and let it expire after ttl ms (0: never).
local function close(at, n, ttl)
  set_fields(at, n)
  local seq = append(at + 2 * n)
  local finished = cjson.decode(redis.call('HGET', job, 'finished_at') or 'null')
  if type(finished) ~= 'number' then finished = 0 end
  redis.call('ZADD', P .. 'finished', finished, id)
  redis.call('SREM', P .. 'cancels', id)
  if ttl > 0 then
    redis.call('PEXPIRE', job, ttl)
    redis.call('PEXPIRE', stream, ttl)
    local idem = redis.call('HGET', job, ':idem')  -- its idempotency key expires with it
    if idem then redis.call('PEXPIRE', P .. 'idem:' .. idem, ttl) end
  end
  return seq
end
"""

#: ARGV: P, id, created_at, n, n x (field, JSON), first event; KEYS[3], when given, the job's
#: idempotency key. Returns 1, or an error when the job exists, or {job id, fingerprint} of the
#: job that holds the idempotency key.
CREATE: Final = (
    _PRELUDE
    + """
if redis.call('EXISTS', job) == 1 then
  -- this very create, sent again after its answer was lost (job ids are random UUIDs)
  if tonumber(redis.call('ZSCORE', P .. 'jobs', id)) == tonumber(ARGV[3]) then return 1 end
  return redis.error_reply('job exists: ' .. id)
end
-- An idempotency key (KEYS[3]; the job's fields ':idem' and ':fp' name it and the request's
-- fingerprint): one job per key. Held by a job still here: that job's id and fingerprint, and
-- nothing is written.
if KEYS[3] then
  local held = redis.call('GET', KEYS[3])
  if held and redis.call('EXISTS', P .. 'job:' .. held) == 1 then
    return {held, redis.call('HGET', P .. 'job:' .. held, ':fp') or ''}
  end
  redis.call('SET', KEYS[3], id)
end
redis.call('ZADD', P .. 'jobs', ARGV[3], id)
redis.call('HSET', job, ':fence', 1, ':own', 1)
set_fields(5, tonumber(ARGV[4]))
return append(5 + 2 * tonumber(ARGV[4]))
"""
)

#: ARGV: P, id, fence ('' for none), own ('' for none: see ``append``), n, n x (field, JSON),
#: events. Returns
#: the first event's seq (0 with no event), -1 when the job is unknown or finished, -2 when the
#: writer's fence is not the job's (nothing written either way).
PUBLISH: Final = (
    _PRELUDE
    + """
if fenced(3) then return -2 end
if not OPEN[redis.call('HGET', job, 'status')] then return -1 end
local n = tonumber(ARGV[5])
set_fields(6, n)
return append(6 + 2 * n, tonumber(ARGV[4]))
"""
)

#: ARGV: P, id, fence ('' for none), ttl_ms (0: none), n, n x (field, JSON) with the finished
#: status, the terminal event. The compare-and-set: only from queued or running; returns the
#: terminal event's seq, -1 when the job is unknown or already finished, -2 when the writer's
#: fence is not the job's (nothing written either way). A writer whose fence is the job's and
#: finds its own terminal event last ended the job itself (its answer was lost, and the call was
#: retried): it gets that event's seq.
FINISH: Final = (
    _PRELUDE
    + """
if fenced(3) then return -2 end
if not OPEN[redis.call('HGET', job, 'status')] then
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if ARGV[3] ~= '' and last and last[2][2] == ARGV[#ARGV] then
    return tonumber(redis.call('HGET', job, ':seq'))
  end
  return -1
end
return close(6, tonumber(ARGV[5]), tonumber(ARGV[4]))
"""
)

#: ARGV: P, id, owner (JSON), now, ttl_ms, n, n x (field, JSON) with the finished status, the
#: terminal event. Ends a job taken from an owner whose lease ran out: only if the job is still
#: open, still that owner's, and the owner's lease still ran out before ``now`` (it may have come
#: back since it was found expired). Raises the fence, so the owner can no longer write to it.
#: Returns the terminal event's seq, or -1 (nothing written).
REAP: Final = (
    _PRELUDE
    + """
if not OPEN[redis.call('HGET', job, 'status')] then return -1 end
if redis.call('HGET', job, 'worker') ~= ARGV[3] then return -1 end
local lease = redis.call('ZSCORE', P .. 'leases', cjson.decode(ARGV[3]))
if lease and tonumber(lease) >= tonumber(ARGV[4]) then return -1 end
redis.call('HINCRBY', job, ':fence', 1)
return close(7, tonumber(ARGV[6]), tonumber(ARGV[5]))
"""
)

#: ARGV: P, id. A cancel request, kept only for a job that is queued or running.
CANCEL: Final = (
    _PRELUDE
    + """
if not OPEN[redis.call('HGET', job, 'status')] then return 0 end
return redis.call('SADD', P .. 'cancels', id)
"""
)

#: KEYS: none; ARGV: P, then job ids. Forgets each finished (or expired) job with its events and
#: index entries; returns how many job hashes were deleted.
PRUNE: Final = """
local P = ARGV[1]
local dropped = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local job = P .. 'job:' .. id
  local status = redis.call('HGET', job, 'status')
  if not (status == '"queued"' or status == '"running"') then
    local idem = redis.call('HGET', job, ':idem')
    if idem and redis.call('GET', P .. 'idem:' .. idem) == id then
      redis.call('DEL', P .. 'idem:' .. idem)
    end
    dropped = dropped + redis.call('DEL', job)
    redis.call('DEL', P .. 'ev:' .. id)
    redis.call('ZREM', P .. 'jobs', id)
    redis.call('ZREM', P .. 'finished', id)
    for _, s in ipairs({'completed', 'failed', 'cancelled'}) do
      redis.call('ZREM', P .. 'status:' .. s, id)
    end
    redis.call('SREM', P .. 'cancels', id)
  end
end
return dropped
"""
