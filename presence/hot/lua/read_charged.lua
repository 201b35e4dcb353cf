-- A signal request's first read of the user's hash, counted against its rate limits in the same
-- step (the device's own limit only if the hash knows the device).
-- KEYS: the user's hash. ARGV: now, the device id, the limits.
-- Returns {1, the hash's fields and values} or, refused, {0, milliseconds to wait, binding limit}.
{{RATE_LIMIT_FUNCTIONS}}
local limits = limit_fields(3)
local v = redis.call('HMGET', KEYS[1], '{{DEVICE_PREFIX}}' .. ARGV[2], unpack(limits))
local counted = {}
for i = 1, #limits do counted[i] = v[1 + i] end
local updates, refused = charge(counted, tonumber(ARGV[1]), 3, v[1] ~= false)
if refused then return {0, refused[1], refused[2]} end
if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
return {1, redis.call('HGETALL', KEYS[1])}
