-- A recomputed user, if its version is still the expected one; moves the version on.
-- KEYS: the user's hash, due.
-- ARGV: expected version ('*' any), due score ('' unscheduled), user id, n, then n field-value
--   pairs to set, then the fields to remove.
local current = redis.call('HGET', KEYS[1], '{{FIELD_VERSION}}') or '-1'
if ARGV[1] ~= '*' and current ~= ARGV[1] then return 0 end
local nset = tonumber(ARGV[4])
local args = {'{{FIELD_VERSION}}', tonumber(current) + 1}
for i = 5, 4 + 2 * nset do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
for i = 5 + 2 * nset, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if ARGV[2] == '' then redis.call('ZREM', KEYS[2], ARGV[3]) else redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
