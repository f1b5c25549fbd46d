-- Step fence (see transaction.rs). KEYS: checkpoint, abort key; ARGV[1]: expected ('' = none).
-- A refusal ends with the checkpoint found ('; found: <value>'), to tell who wrote it.
local ok, current = pcall(redis.call, 'GET', KEYS[1])
local detail = nil
if not ok then
  detail = 'checkpoint cannot be read'
elseif ARGV[1] == '' then
  if current then detail = 'checkpoint is set but this step expected none' end
elseif current ~= ARGV[1] then
  detail = 'checkpoint moved since this step was prepared'
end
if detail then
  redis.call('SET', KEYS[2], detail, 'PX', 60000)
  if ok and current then detail = detail .. '; found: ' .. current end
  return redis.error_reply('FENCED ' .. detail)
end
return 0
