-- Save channel states, each stamped with the input offset it reflects. Atomic, one round trip.
-- KEYS: one hash per channel. ARGV: four values per key: partition, last_offset, state, buffer.
-- A state whose offset is not newer than the stored one on the same partition is a replay
-- (a redelivered batch, or a replica that lost a rebalance race): it is skipped, so the
-- stored state never moves backwards.
local applied = 0
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local partition = ARGV[base + 1]
  local offset = tonumber(ARGV[base + 2])
  local cur = redis.call('HMGET', key, 'partition', 'last_offset')
  if (not cur[2]) or cur[1] ~= partition or tonumber(cur[2]) < offset then
    redis.call('HSET', key, 'partition', partition, 'last_offset', ARGV[base + 2],
               'state', ARGV[base + 3], 'buffer', ARGV[base + 4])
    applied = applied + 1
  end
end
return applied
