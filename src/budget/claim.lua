-- KEYS: claims (sorted set: claim id -> when its request was answered, ms, or while in
-- flight the latest it can be answered), pause (string: what set it, with an expiry),
-- limits (hash: "N/PER_MS" -> until when that declaration counts, ms).
-- ARGV: claim id, this process's N, its PER (ms), its http_timeout (ms), the longest
-- pause taken as real (ms), the places of every window to leave free (a deeper read
-- takes no one's last place), the largest N and PER (ms) a rate_limit can declare.
-- Returns {wait ms (0: granted), why ('granted' | 'full' | 'paused'), the pause's
-- setter, the tightest N, its PER, junk removed, of which limit declarations}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, n, per = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local timeout, longest_pause = tonumber(ARGV[4]), tonumber(ARGV[5])
local reserve = tonumber(ARGV[6] or '0')
local max_n, max_per = tonumber(ARGV[7]), tonumber(ARGV[8])
local junk, junk_limits = 0, 0

-- Keys of another type are junk: removed, not a reason to stop.
for i, kind in ipairs({'zset', 'string', 'hash'}) do
  local actual = redis.call('TYPE', KEYS[i])['ok']
  if actual ~= 'none' and actual ~= kind then
    redis.call('DEL', KEYS[i])
    junk = junk + 1
  end
end

-- A pause without expiry, or longer than any Retry-After taken, was not set by a 429.
local paused = redis.call('PTTL', KEYS[2])
if paused == -1 or paused > longest_pause then
  redis.call('DEL', KEYS[2])
  junk = junk + 1
  paused = -2
end

-- Declarations: this one, and every other still counting.
local declared_for = per + timeout + 60000
redis.call('HSET', KEYS[3], n .. '/' .. per, now + declared_for)
local limits, longest = {}, per
local fields = redis.call('HGETALL', KEYS[3])
for i = 1, #fields, 2 do
  local ln, lper = string.match(fields[i], '^(%d+)/(%d+)$')
  local until_ms = tonumber(fields[i + 1])
  ln, lper = tonumber(ln), tonumber(lper)
  if not ln or not lper or not until_ms or ln < 1 or lper < 1
      or until_ms < now or until_ms > now + 10 * declared_for then
    redis.call('HDEL', KEYS[3], fields[i])
  elseif ln > max_n or lper > max_per then
    -- No rate_limit declares it: junk, not a limit to obey.
    redis.call('HDEL', KEYS[3], fields[i])
    junk, junk_limits = junk + 1, junk_limits + 1
  else
    limits[#limits + 1] = {ln, lper}
    if lper > longest then longest = lper end
  end
end
redis.call('PEXPIRE', KEYS[3], 10 * declared_for)

-- The tightest declaration: the fewest requests per second.
local tight_n, tight_per = n, per
for _, limit in ipairs(limits) do
  if limit[1] * tight_per < tight_n * limit[2] then
    tight_n, tight_per = limit[1], limit[2]
  end
end

-- Claims: none can be answered later than a request's timeout from now; beyond that
-- (and the window) a claim is junk. Answered longer ago than every window: done.
junk = junk + redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (now + timeout + longest), '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
redis.call('PEXPIRE', KEYS[1], longest + timeout)

if paused > 0 then
  local by = redis.call('GET', KEYS[2])
  return {paused, 'paused', by, tight_n, tight_per, junk, junk_limits}
end

-- Every declared limit holds, each over its own window.
local wait = 0
for _, limit in ipairs(limits) do
  local room, lper = math.max(1, limit[1] - reserve), limit[2]
  local counted = redis.call('ZCOUNT', KEYS[1], '(' .. (now - lper), '+inf')
  if counted >= room then
    local kth = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - lper), '+inf',
      'WITHSCORES', 'LIMIT', counted - room, 1)
    local free_at = math.min(tonumber(kth[2]), now) + lper
    wait = math.max(wait, free_at - now, 1)
  end
end
if wait > 0 then
  return {wait, 'full', '', tight_n, tight_per, junk, junk_limits}
end
redis.call('ZADD', KEYS[1], now + timeout, id)
redis.call('PEXPIRE', KEYS[1], longest + timeout)
return {0, 'granted', '', tight_n, tight_per, junk, junk_limits}
