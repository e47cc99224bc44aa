-- Extend the leases of slots still held (ZADD XX: a slot that already expired and was
-- dropped is not taken again behind the limit's back).
-- KEYS: sorted sets. ARGV: per key: member, lease_ms. Reply: how many were renewed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i = 1, #KEYS do
  local lease = tonumber(ARGV[2 * i])
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, ARGV[2 * i - 1])
  redis.call('PEXPIRE', KEYS[i], lease + 1000)
end
return renewed
