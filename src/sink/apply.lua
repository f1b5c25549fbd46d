-- One atomic step: check the fence, apply the cache operations, move the checkpoint.
--
-- KEYS[1]      checkpoint key
-- KEYS[2..]    one key per operation, in order
-- ARGV[1]      checkpoint value this step expects to find ('' = no checkpoint yet)
-- ARGV[2]      new checkpoint value ('' = leave it: a middle step of a split transaction)
-- ARGV[3..]    operations, each consuming the next key:
--                'S', value, ttl_ms            SET (PX when ttl_ms > 0)
--                'H', n, f1, v1, ..., ttl_ms   replace the hash with n fields
--                'D'                           DEL
--                'M', n, k1, v1, ..., kn, vn   MSET of n keys (no TTL), consuming n keys
--                'X', n                        DEL of the next n keys
-- Runs of plain SETs and of DELs come grouped ('M', 'X'): one command per run instead of
-- one per key, which is most of Redis's time in a catch-up. A run keeps the order of its
-- operations (MSET sets left to right), and runs keep theirs.
--
-- The fence runs before any write, so a step from a superseded instance (one that was
-- killed, or stalled in a socket buffer) changes nothing.
--
-- A step of deletions only calls this script with no operations (the fence and the
-- checkpoint) inside MULTI/EXEC, followed by one native DEL of its keys: see
-- `RedisSink::deletes`.
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then
    return redis.error_reply('FENCED checkpoint is set but this step expected none')
  end
elseif current ~= ARGV[1] then
  return redis.error_reply('FENCED checkpoint moved since this step was prepared')
end

local k = 2
local i = 3
local n_args = #ARGV
while i <= n_args do
  local op = ARGV[i]
  local key = KEYS[k]
  k = k + 1
  if op == 'S' then
    local ttl = tonumber(ARGV[i + 2])
    if ttl > 0 then
      redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[i + 1])
    end
    i = i + 3
  elseif op == 'H' then
    local n = tonumber(ARGV[i + 1])
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(ARGV, i + 2, i + 1 + 2 * n))
    local ttl = tonumber(ARGV[i + 2 + 2 * n])
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    end
    i = i + 3 + 2 * n
  elseif op == 'D' then
    redis.call('DEL', key)
    i = i + 1
  elseif op == 'M' then
    local n = tonumber(ARGV[i + 1])
    redis.call('MSET', unpack(ARGV, i + 2, i + 1 + 2 * n))
    k = k + n - 1
    i = i + 2 + 2 * n
  elseif op == 'X' then
    local n = tonumber(ARGV[i + 1])
    redis.call('DEL', unpack(KEYS, k - 1, k + n - 2))
    k = k + n - 1
    i = i + 2
  else
    return redis.error_reply('BADOP unknown operation ' .. tostring(op))
  end
end

if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
return k - 2
