-- Take one concurrency slot of every key for one request, or none: a slot is a member of
-- the key's sorted set whose score is its lease's expiry (ms, Redis time). Expired members
-- (holders that stopped renewing: a node that died) are dropped first.
-- KEYS: sorted sets. ARGV: member; per key: limit, lease_ms.
-- Reply: {allowed, per key: holders before this request}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local reply = {1}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  reply[i + 1] = held
  if held >= tonumber(ARGV[2 * i]) then reply[1] = 0 end
end
if reply[1] == 1 then
  for i = 1, #KEYS do
    local lease = tonumber(ARGV[2 * i + 1])
    redis.call('ZADD', KEYS[i], now + lease, member)
    redis.call('PEXPIRE', KEYS[i], lease + 1000)
  end
end
return reply
