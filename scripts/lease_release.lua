-- lease_release (optional): give a lease back without filling, e.g. when the row does not
-- exist, so other readers need not wait for the lease to expire.
--
-- KEYS[1]  the cache key
-- ARGV[1]  the token lease_get returned
--
-- Returns 1 if the caller's lease was removed, 0 if it was already gone.
local MARKER = '\0cdc-cache:lease:'
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then
  return 0
end
if redis.call('GET', KEYS[1]) ~= MARKER .. ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
