"""The Redis broker's keys and its Lua scripts: each state change that must be atomic is one
script, which Redis runs whole, with no other command between its steps.

Keys, under a prefix P (``zserve:`` unless the URL says ``?prefix=``):

- ``P job:<id>``: a hash, one field per ``JobRecord`` field, each value JSON (written by
  Python, so floats keep every digit; the scripts only compare ``status`` and read ``worker``,
  ``finished_at``), plus ``:seq``, the job's last event seq;
- ``P ev:<id>``: a stream, one entry per event, whose id is ``<seq>-0`` and whose field ``e``
  holds the event as JSON (a resume is ``XRANGE`` from ``seq + 1``, a tail ``XREAD`` after
  ``<seq>-0``);
- ``P jobs``: a sorted set of every job id by ``created_at`` (listings, newest first, ties by
  id as ``ZREVRANGEBYSCORE`` gives them); ``P status:<status>``: the same, per status;
- ``P finished``: finished job ids by ``finished_at`` (0 when unset), for pruning;
- ``P owners``: a hash of unfinished jobs that have a worker -> that worker (lease checks);
- ``P leases``: a sorted set of workers by the time their lease runs out;
- ``P cancels``: a set of the jobs with a cancel request;
- ``P cancel:<worker>``: the pub/sub channel a cancel request for a job of ``worker`` is
  published on (the job id), so that its owner hears of it at once.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CANCEL", "CREATE", "FINISH", "PRUNE", "PUBLISH"]

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

-- Append the events ARGV[at..#ARGV] with the next seqs; return the first one's seq.
local function append(at)
  local count = #ARGV - at + 1
  if count <= 0 then return 0 end
  local last = redis.call('HINCRBY', job, ':seq', count)
  local first = last - count + 1
  for i = 0, count - 1 do
    redis.call('XADD', stream, (first + i) .. '-0', 'e', ARGV[at + i])
  end
  return first
end
"""

#: ARGV: P, id, created_at, n, n x (field, JSON), first event. Returns 1, or an error when the
#: job exists.
CREATE: Final = (
    _PRELUDE
    + """
if redis.call('EXISTS', job) == 1 then return redis.error_reply('job exists: ' .. id) end
redis.call('ZADD', P .. 'jobs', ARGV[3], id)
set_fields(5, tonumber(ARGV[4]))
return append(5 + 2 * tonumber(ARGV[4]))
"""
)

#: ARGV: P, id, n, n x (field, JSON), events. Returns the first event's seq (0 with no event),
#: or -1 when the job is unknown or finished (nothing written).
PUBLISH: Final = (
    _PRELUDE
    + """
if not OPEN[redis.call('HGET', job, 'status')] then return -1 end
set_fields(4, tonumber(ARGV[3]))
return append(4 + 2 * tonumber(ARGV[3]))
"""
)

#: ARGV: P, id, ttl_ms (0: none), n, n x (field, JSON) with the finished status, the terminal
#: event. The compare-and-set: only from queued or running; returns the terminal event's seq, or
#: -1 when the job is unknown or already finished (nothing written).
FINISH: Final = (
    _PRELUDE
    + """
if not OPEN[redis.call('HGET', job, 'status')] then return -1 end
local n = tonumber(ARGV[4])
set_fields(5, n)
local seq = append(5 + 2 * n)
local finished = cjson.decode(redis.call('HGET', job, 'finished_at') or 'null')
if type(finished) ~= 'number' then finished = 0 end
redis.call('ZADD', P .. 'finished', finished, id)
redis.call('SREM', P .. 'cancels', id)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', job, ttl)
  redis.call('PEXPIRE', stream, ttl)
end
return seq
"""
)

#: ARGV: P, id. A cancel request, kept only for a job that is queued or running, and published
#: (the job id) on ``P cancel:<owner>`` when the job has an owner, which is woken at once.
CANCEL: Final = (
    _PRELUDE
    + """
if not OPEN[redis.call('HGET', job, 'status')] then return 0 end
local added = redis.call('SADD', P .. 'cancels', id)
local owner = cjson.decode(redis.call('HGET', job, 'worker') or 'null')
if type(owner) == 'string' and owner ~= '' then
  redis.call('PUBLISH', P .. 'cancel:' .. owner, id)
end
return added
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
