-- Reconcile a reservation: charge the difference between actual and reserved usage,
-- moving each TAT forward (more used) or back (refund). Mirrors gcra.adjust.
-- KEYS: n GCRA keys, then quota hashes. ARGV: n; per GCRA key: period_us, limit, delta;
-- per quota: delta. A bucket refunded past full is deleted (same as absent).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local delta = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tat = tat + delta * period / limit
  if tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
end
for j = 1, #KEYS - n do
  local used = tonumber(redis.call('HINCRBYFLOAT', KEYS[n + j], 'used', ARGV[3 * n + 1 + j]))
  if used < 0 then redis.call('HSET', KEYS[n + j], 'used', 0) end
end
return 1
