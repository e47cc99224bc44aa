-- Take one concurrency slot of every key for one request, first come first served behind
-- the keys' wait queues, or queue it. A queue is a sorted set of waiting members scored
-- with their arrival (ms, Redis time); a member older than its key's timeout (plus 1 s) is
-- a waiter that died without leaving, and is dropped. A request may take the slots when,
-- on every key, the slots held plus the waiters ahead of it are below the limit; a member
-- not yet queued counts every waiter as ahead (nobody jumps the queue).
-- KEYS: n slot sorted sets, then n queue sorted sets (one per slot key, in the same order).
-- ARGV: member; per key: limit, lease_ms, queue_size (0: no queue), queue_timeout_ms.
-- Reply: {outcome, per key: holders before this request}; outcome 1 taken (the member left
-- every queue), 2 waiting (queued now or still), 0 refused (a key without a queue is full),
-- -1 refused (a queue is full).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS / 2
local member = ARGV[1]
local reply = {1}
local blocked_without_queue = false
local queued = {}
for i = 1, n do
  local slots, queue = KEYS[i], KEYS[n + i]
  local limit, size = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i])
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local held = redis.call('ZCARD', slots)
  reply[i + 1] = held
  local ahead = 0
  if size > 0 then
    redis.call('ZREMRANGEBYSCORE', queue, '-inf', now - tonumber(ARGV[4 * i + 1]) - 1000)
    local rank = redis.call('ZRANK', queue, member)
    queued[i] = rank ~= false
    if rank then ahead = rank else ahead = redis.call('ZCARD', queue) end
  end
  if held + ahead >= limit then
    reply[1] = 0
    if size == 0 then blocked_without_queue = true end
  end
end
if reply[1] == 1 then
  for i = 1, n do
    local lease = tonumber(ARGV[4 * i - 1])
    redis.call('ZADD', KEYS[i], now + lease, member)
    redis.call('PEXPIRE', KEYS[i], lease + 1000)
    if tonumber(ARGV[4 * i]) > 0 then redis.call('ZREM', KEYS[n + i], member) end
  end
  return reply
end
if blocked_without_queue then return reply end
for i = 1, n do
  local size = tonumber(ARGV[4 * i])
  if size > 0 and not queued[i] and redis.call('ZCARD', KEYS[n + i]) >= size then
    reply[1] = -1
    return reply
  end
end
for i = 1, n do
  local size = tonumber(ARGV[4 * i])
  if size > 0 and not queued[i] then
    redis.call('ZADD', KEYS[n + i], now, member)
    redis.call('PEXPIRE', KEYS[n + i], tonumber(ARGV[4 * i + 1]) + 2000)
  end
end
reply[1] = 2
return reply
