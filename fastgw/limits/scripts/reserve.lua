-- Check-and-reserve every GCRA key and quota of one request: all are charged or none.
-- Mirrors fastgw/limits/gcra.py (check) in microseconds; time comes from Redis so node
-- clocks do not matter.
-- KEYS: n GCRA keys (value: TAT in microseconds), then quota hashes {limit, used}.
-- ARGV: n; per GCRA key: period_us, limit, cost; per quota: the rule's limit, amount.
-- Reply: {allowed, per GCRA key: remaining, reset_us, wait_us (-1: never fits),
--         per quota: fits, limit, used (after charging if allowed)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local slack = 1e-9
local allowed = 1
local base, after, waits, periods, intervals = {}, {}, {}, {}, {}
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  base[i], after[i], periods[i], intervals[i] = tat, tat + cost * interval, period, interval
  if cost > limit * (1 + slack) then
    waits[i] = -1
    allowed = 0
  else
    local wait = after[i] - period - now
    if wait > period * slack then
      waits[i] = math.ceil(wait)
      allowed = 0
    else
      waits[i] = 0
    end
  end
end
local quotas = {}
for j = 1, #KEYS - n do
  local key = KEYS[n + j]
  local state = redis.call('HMGET', key, 'limit', 'used')
  local limit = tonumber(state[1]) or tonumber(ARGV[3 * n + 2 * j])
  local used = tonumber(state[2]) or 0
  local amount = tonumber(ARGV[3 * n + 2 * j + 1])
  local fits = 0
  if used + amount <= limit then fits = 1 else allowed = 0 end
  quotas[j] = {key, fits, limit, used, amount}
end
local reply = {allowed}
for i = 1, n do
  local tat = base[i]
  if allowed == 1 then
    tat = after[i]
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((now + periods[i] - tat) / intervals[i] + slack)
  if remaining < 0 then remaining = 0 end
  reply[#reply + 1] = remaining
  reply[#reply + 1] = math.ceil(tat - now)
  reply[#reply + 1] = waits[i]
end
for j = 1, #quotas do
  local q = quotas[j]
  local used = q[4]
  if allowed == 1 then
    used = tonumber(redis.call('HINCRBYFLOAT', q[1], 'used', string.format('%.17g', q[5])))
  end
  reply[#reply + 1] = q[2]
  reply[#reply + 1] = string.format('%.17g', q[3])
  reply[#reply + 1] = string.format('%.17g', used)
end
return reply
