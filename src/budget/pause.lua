-- KEYS: pause. ARGV: milliseconds, what set it. Holds every sharer that long; never
-- shortens a longer pause.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
end
return 0
