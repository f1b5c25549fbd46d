-- One slot's part of a step on a Redis Cluster (see cluster.rs), atomic as a script.
-- KEYS[1]: the slot's fence key; KEYS[2..]: the operations' keys, in order.
-- ARGV[1]: this session's epoch; then per operation its kind and arguments:
--   S value | P value ttl_ms | D | H ttl_ms n field value ... | R n entry ... | E ttl_ms
-- Refused, writing nothing, when a later session has written the slot.
local current = redis.call('GET', KEYS[1])
if current and (tonumber(current) or 0) > tonumber(ARGV[1]) then
  return redis.error_reply('FENCED a later session (epoch ' .. current ..
    ') has written this slot; this one is epoch ' .. ARGV[1])
end
-- unpack() is bounded by Lua's stack: long argument lists go in batches.
local function batched(cmd, key, first, last, per)
  local i = first
  while i <= last do
    local j = math.min(i + per - 1, last)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
local a = 2
for k = 2, #KEYS do
  local key, kind = KEYS[k], ARGV[a]
  a = a + 1
  if kind == 'S' then
    redis.call('SET', key, ARGV[a]); a = a + 1
  elseif kind == 'P' then
    redis.call('SET', key, ARGV[a], 'PX', ARGV[a + 1]); a = a + 2
  elseif kind == 'D' then
    redis.call('DEL', key)
  elseif kind == 'H' then
    local ttl, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2
    redis.call('DEL', key)
    batched('HSET', key, a, a + 2 * n - 1, 1000); a = a + 2 * n
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  elseif kind == 'E' then
    redis.call('PEXPIRE', key, ARGV[a]); a = a + 1
  elseif kind == 'R' then
    local n = tonumber(ARGV[a]); a = a + 1
    batched('RPUSH', key, a, a + n - 1, 1000); a = a + n
  else
    return redis.error_reply('ERR unknown operation kind ' .. tostring(kind))
  end
end
if current ~= ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
