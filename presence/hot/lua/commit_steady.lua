-- A signal's device and the decision it leaves, if neither the user's version nor the device's
-- seq moved since they were read.
-- KEYS: the user's hash, due, dirty, persist, persist:seq, history.
-- ARGV: 1 expected version, 2 expected seq, 3 device id, 4 device state, 5 seq, 6 decision,
--   7 due score ('' unscheduled), 8 user id, 9 dirty member ('' none), 10 last seen,
--   11 flushed at, 12 persist ('' no), 13 history entry ('' none), 14 channel, 15 payload ('' none).
if (redis.call('HGET', KEYS[1], '{{FIELD_VERSION}}') or '-1') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], '{{SEQ_PREFIX}}' .. ARGV[3]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], '{{DEVICE_PREFIX}}' .. ARGV[3], ARGV[4], '{{SEQ_PREFIX}}' .. ARGV[3], ARGV[5],
  '{{FIELD_DECISION}}', ARGV[6], '{{FIELD_VERSION}}', ARGV[1] + 1,
  '{{SEEN_PREFIX}}' .. ARGV[3], ARGV[10], '{{FLUSHED_PREFIX}}' .. ARGV[3], ARGV[11])
if ARGV[7] == '' then redis.call('ZREM', KEYS[2], ARGV[8]) else redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8]) end
if ARGV[9] ~= '' then redis.call('SADD', KEYS[3], ARGV[9]) end
if ARGV[12] ~= '' then redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[8]) end
if ARGV[13] ~= '' then redis.call('RPUSH', KEYS[6], ARGV[13]) end
if ARGV[14] ~= '' then redis.call('PUBLISH', ARGV[14], ARGV[15]) end
return 1
