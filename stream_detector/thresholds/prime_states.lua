-- Write primed channel states (stream_detector.priming) only where a channel has no state.
-- KEYS: one hash per channel. ARGV: four values per key: partition, last_offset, state, buffer.
-- A channel the daemon has already written keeps its live state: priming never replaces it,
-- whatever offset either carries. Atomic, one round trip.
local written = 0
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'partition', ARGV[base + 1], 'last_offset', ARGV[base + 2],
               'state', ARGV[base + 3], 'buffer', ARGV[base + 4])
    written = written + 1
  end
end
return written
