-- KEYS: lock. ARGV: token, TTL (ms). Renews the lock while it is ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
