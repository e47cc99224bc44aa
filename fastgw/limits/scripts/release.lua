-- Give back slots. KEYS: sorted sets. ARGV: per key: member. Reply: how many were held.
local released = 0
for i = 1, #KEYS do
  released = released + redis.call('ZREM', KEYS[i], ARGV[i])
end
return released
