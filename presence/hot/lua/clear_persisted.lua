-- Unmark users written to the database, unless marked again since.
-- KEYS: persist. ARGV: user id, mark, user id, mark, ...
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 1
