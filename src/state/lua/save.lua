-- KEYS: lock, state. ARGV: token, watermark, origin, rescanned, owed_first,
-- owed_second, deeper, tenant (the lane's; '' when unknown). 0 when the lock is not
-- ours. The frontiers never move back.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for i, field in ipairs({'watermark', 'rescanned'}) do
  local current = tonumber(redis.call('HGET', KEYS[2], field) or '0')
  if tonumber(ARGV[i * 2]) > current then
    redis.call('HSET', KEYS[2], field, ARGV[i * 2])
  end
end
redis.call('HSETNX', KEYS[2], 'origin', ARGV[3])
redis.call('HSET', KEYS[2], 'owed_first', ARGV[5], 'owed_second', ARGV[6], 'deeper', ARGV[7])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[2], 'tenant', ARGV[8])
end
return 1
