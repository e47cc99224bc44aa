-- Raise one consumer's quota limit by ARGV[2]; a ledger without its own limit starts from
-- the rule's (ARGV[1]). Reply: {limit, used}.
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit')) or tonumber(ARGV[1])
limit = limit + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'limit', string.format('%.17g', limit))
return {string.format('%.17g', limit), redis.call('HGET', KEYS[1], 'used') or '0'}
