-- Users marked for the database writer before this call, oldest mark first, with their marks.
-- KEYS: persist, persist:seq. ARGV: at most how many.
local upto = redis.call('GET', KEYS[2])
if not upto then return {} end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
