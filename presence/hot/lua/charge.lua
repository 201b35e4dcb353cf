-- A request counted against rate limits, or refused.
-- KEYS: the user's hash. ARGV: now, the limits.
-- Returns 0 or, refused, {milliseconds to wait, binding limit}.
{{RATE_LIMIT_FUNCTIONS}}
local limits = limit_fields(2)
local updates, refused = charge(redis.call('HMGET', KEYS[1], unpack(limits)), tonumber(ARGV[1]), 2, true)
if refused then return refused end
redis.call('HSET', KEYS[1], unpack(updates))
return 0
