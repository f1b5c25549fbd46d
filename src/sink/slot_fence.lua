-- Slot fence on a Redis Cluster (see cluster.rs). KEYS: the slot's fence key, abort key;
-- ARGV[1]: this session's epoch. Refuses when a later session has written the slot.
local ok, current = pcall(redis.call, 'GET', KEYS[1])
local detail = nil
if not ok then
  detail = 'slot fence cannot be read'
elseif current and (tonumber(current) or 0) > tonumber(ARGV[1]) then
  detail = 'a later session (epoch ' .. current .. ') has written this slot; this one is epoch ' .. ARGV[1]
end
if detail then
  redis.call('SET', KEYS[2], detail, 'PX', 60000)
  return redis.error_reply('FENCED ' .. detail)
end
return 0
