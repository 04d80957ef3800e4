-- KEYS: claims. ARGV: claim id. The request was answered now: its claim counts for
-- every window from here.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
end
return 0
