-- One device, if its seq is still the expected one.
-- KEYS: the user's hash.
-- ARGV: expected seq ('*' any, '' none yet), device id, device state, seq, last seen, flushed at.
if ARGV[1] ~= '*' then
  local seq = redis.call('HGET', KEYS[1], '{{SEQ_PREFIX}}' .. ARGV[2])
  if (seq or '') ~= ARGV[1] then return 0 end
end
redis.call('HSET', KEYS[1], '{{DEVICE_PREFIX}}' .. ARGV[2], ARGV[3], '{{SEQ_PREFIX}}' .. ARGV[2], ARGV[4],
  '{{SEEN_PREFIX}}' .. ARGV[2], ARGV[5], '{{FLUSHED_PREFIX}}' .. ARGV[2], ARGV[6])
return 1
