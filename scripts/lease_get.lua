-- lease_get: read a cache key, or take the lease to fill it.
--
-- KEYS[1]  the cache key
-- ARGV[1]  lease TTL in milliseconds (how long a filler may take)
--
-- Returns {"hit", value}  the key holds a value (a hash: its flat field/value list)
--         {"lease", token} the key was missing; the caller holds a fresh lease, stored in
--                          the key itself, and may fill it with lease_fill
--         {"wait"}         another caller holds the lease: retry shortly, or read the
--                          database without filling
--
-- The lease lives in the key, so whatever the cdc-cache daemon does to the key after a
-- commit (SET, DEL, the DEL+HSET of a hash) replaces or removes it. A reader that took the
-- lease before the commit then finds its token gone and its late, stale fill is refused.
local MARKER = '\0cdc-cache:lease:'
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  local value = redis.call('GET', key)
  if string.sub(value, 1, #MARKER) == MARKER then
    return {'wait'}
  end
  return {'hit', value}
elseif kind == 'hash' then
  return {'hit', redis.call('HGETALL', key)}
elseif kind ~= 'none' then
  return redis.error_reply('WRONGTYPE lease_get: ' .. key .. ' holds a ' .. kind)
end
local ttl = tonumber(ARGV[1])
if not ttl or ttl <= 0 then
  return redis.error_reply('ERR lease_get: ARGV[1] must be a lease TTL in milliseconds')
end
-- Unique enough: two leases on one key cannot coexist, and a new one can only be taken
-- after the old one is gone, which takes longer than a microsecond.
local now = redis.call('TIME')
local token = now[1] .. '.' .. now[2]
redis.call('SET', key, MARKER .. token, 'PX', ttl)
return {'lease', token}
