-- lease_fill: store a value read from the database, only if the caller's lease still
-- stands.
--
-- KEYS[1]  the cache key
-- ARGV[1]  the token lease_get returned
-- ARGV[2]  the value
-- ARGV[3]  TTL of the value in milliseconds (0 = none)
--
-- Returns 1 if stored; 0 if the lease is gone: the cdc-cache daemon invalidated or
-- overwrote the key after a commit (so the value read may be stale), the lease expired,
-- or another caller took it.
local MARKER = '\0cdc-cache:lease:'
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'string' then
  return 0
end
if redis.call('GET', key) ~= MARKER .. ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[3]) or 0
if ttl > 0 then
  redis.call('SET', key, ARGV[2], 'PX', ttl)
else
  redis.call('SET', key, ARGV[2])
end
return 1
