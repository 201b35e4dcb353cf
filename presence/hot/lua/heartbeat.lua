-- A lone heartbeat of a live device, in one step. A heartbeat only proves a device is still there:
-- on a device that is live, it changes no decision (a device's liveness is all it moves, and the
-- decision's valid_until already falls at or before the old expiry, where the sweep recomputes
-- quietly). Anything else is left to Python.
-- KEYS: the user's hash, the dirty set.
-- ARGV: device id, seq, now, device flush seconds, user id, the settings fingerprint (3 values),
--   then the rate limits (field, interval, burst window each).
-- Returns {1, decision} recorded, {2, decision} seq not newer (ignored), {0} left to Python,
-- {3, milliseconds to wait, binding limit} refused by a rate limit.
{{RATE_LIMIT_FUNCTIONS}}
local h = KEYS[1]
local id = ARGV[1]
local now = tonumber(ARGV[3])
local limits = limit_fields(9)
local v = redis.call('HMGET', h, '{{FIELD_VERSION}}', '{{FIELD_LOADED}}', '{{FIELD_CONTEXT}}', '{{FIELD_DECISION}}',
  '{{DEVICE_PREFIX}}' .. id, '{{SEQ_PREFIX}}' .. id, '{{SEEN_PREFIX}}' .. id, '{{FLUSHED_PREFIX}}' .. id,
  unpack(limits))
local counted = {}
for i = 1, #limits do counted[i] = v[8 + i] end
local updates, refused = charge(counted, now, 9, v[5] ~= false)
if refused then return {3, refused[1], refused[2]} end
if #updates > 0 then redis.call('HSET', h, unpack(updates)) end
local ver, loaded, ctx, dec, dev, seq, seen, flushed = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
if not ver or loaded ~= '{{LOADED}}' or not ctx or not dec or not dev or not seq or not seen then return {0} end
local function newer(a, b)  -- decimal strings of non-negative integers; b may be '-1'
  if b == '-1' then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end
if not newer(ARGV[2], seq) then return {2, dec} end
local decision = cjson.decode(dec)
local valid_until = decision['{{DECISION_VALID_UNTIL}}']
if valid_until ~= cjson.null and valid_until <= now then return {0} end
local context = cjson.decode(ctx)
local cfg = context['{{CONTEXT_SETTINGS}}']
if not cfg or cfg[1] ~= tonumber(ARGV[6]) or cfg[2] ~= tonumber(ARGV[7]) or cfg[3] ~= tonumber(ARGV[8]) then
  return {0}
end
local timeout = context['{{CONTEXT_POLICY}}']['{{POLICY_DEVICE_TIMEOUT}}']
if cjson.decode(dev)['{{STATE_NETWORK}}'] ~= '{{NETWORK_ONLINE}}' or tonumber(seen) + timeout <= now then
  return {0}
end
redis.call('HSET', h, '{{SEEN_PREFIX}}' .. id, ARGV[3], '{{SEQ_PREFIX}}' .. id, ARGV[2], '{{FIELD_VERSION}}', ver + 1)
if now - tonumber(flushed or '0') >= tonumber(ARGV[4]) then
  redis.call('HSET', h, '{{FLUSHED_PREFIX}}' .. id, ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[5] .. ':' .. id)
end
return {1, dec}
