-- A new cluster session's epoch (see cluster.rs). KEYS[1]: the epoch key; ARGV[1]: this
-- instance's clock in microseconds. The epoch is the clock, or one more than the last
-- session's when that is later (a clock behind another instance's): always above every
-- epoch handed out before, so a new session is never refused by slots an earlier wrote.
local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local epoch = tonumber(ARGV[1])
if epoch <= last then epoch = last + 1 end
redis.call('SET', KEYS[1], string.format('%.0f', epoch))
return string.format('%.0f', epoch)
