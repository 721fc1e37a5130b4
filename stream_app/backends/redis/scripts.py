"""The Lua scripts of the Redis backend, and how to read what they leave behind.

``PUBLISH_SCRIPT`` (KEYS: stream, last id, epoch, primary; ARGV: payload, HISTORY_SIZE, TTL in
ms, pub/sub channel): the id, ``XADD``, TTLs and ``PUBLISH`` in one atomic step.

``TAKEOVER_SCRIPT`` (KEYS: primary, last id, holes; ARGV: TTL in ms) runs on every new
connection, before its first command. It records which server (``run_id``) holds the history.
When that changes while a history exists (a Sentinel failover promoted a replica, or a Redis with
persistence restarted), the events the previous server issued after the last id this one has
may be lost (not replicated, not yet on disk): the script records the hole ``(last id, now)``
and moves the counter to ``now``, so new ids sort after anything the lost server could have
issued (given clocks that agree within the failover time), and a client that resumes from
before the end of the hole (it would cross it) gets ``reset`` instead of a silent gap.
"""

from __future__ import annotations

from typing import Any

from ..base import id_key

__all__ = ["PUBLISH_SCRIPT", "TAKEOVER_SCRIPT", "crosses_hole", "trimmed_after"]

TAKEOVER_SCRIPT = """
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%w+)')
local seen = redis.call('GET', KEYS[1])
if seen == run_id then
  return 0
end
redis.call('SET', KEYS[1], run_id, 'PX', ARGV[1])
local last = redis.call('GET', KEYS[2])
if seen and last then
  local t = redis.call('TIME')
  local now = string.format('%d-0', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('RPUSH', KEYS[3], last .. ' ' .. now)
  redis.call('LTRIM', KEYS[3], -16, -1)
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  redis.call('SET', KEYS[2], now, 'PX', ARGV[1])
end
return 1
"""

PUBLISH_SCRIPT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[2])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms = tonumber(lms)
  if ms <= lms then
    ms = lms
    seq = tonumber(lseq) + 1
  end
else
  redis.call('SET', KEYS[3], string.format('%d', ms), 'PX', ARGV[3])
end
local id = string.format('%d-%d', ms, seq)
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'm', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[1])
return id
"""


def trimmed_after(info: dict[str, Any], key: tuple[int, ...]) -> bool:
    """Whether ``XINFO STREAM`` shows entries newer than ``key`` may have been trimmed.

    ``MAXLEN`` trimming does not move ``max-deleted-entry-id`` (only XDEL does), so: entries
    were removed (more added than remain) and the oldest one left is newer than ``key``.
    Trimming removes the oldest first, so anything removed is older than that entry; when
    it is newer than ``key``, some of what was removed may be too.
    """
    deleted = id_key(str(info.get("max-deleted-entry-id") or "0-0"))
    if deleted is not None and deleted > key:
        return True
    first = info.get("first-entry")
    if not first or int(info.get("entries-added") or 0) <= int(info.get("length") or 0):
        return False
    first_key = id_key(str(first[0]))
    return first_key is not None and first_key > key


def crosses_hole(holes: list[str], key: tuple[int, ...]) -> bool:
    """Whether going on from ``key`` crosses one of the recorded ``"<from> <to>"`` holes: a
    client at or before ``<to>`` may have missed events that no server has any more."""
    for hole in holes:
        high = id_key(hole.partition(" ")[2])
        if high is not None and key < high:
            return True
    return False
