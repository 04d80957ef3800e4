-- The deduplicating write of one page: see DEDUP_SCRIPT in redis.rs.
local function wrong_type(key, expected)
  local actual = redis.call('TYPE', key)['ok']
  if actual ~= 'none' and actual ~= expected then
    return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. actual .. ', not a ' .. expected)
  end
end
local mode, max_len, maxlen = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local container = (mode ~= 'channel') and mode or nil
local refused = (container and wrong_type(KEYS[1], container)) or wrong_type(KEYS[2], 'zset')
if refused then
  return refused
end
if container and max_len > 0 then
  local held = redis.call(mode == 'list' and 'LLEN' or 'XLEN', KEYS[1])
  if held >= max_len then
    return redis.error_reply('BEHIND consumer behind: ' .. KEYS[1] .. ' holds ' .. held .. ' >= max_queue_len ' .. max_len)
  end
end
-- Versioned keys are `{record id}#{content digest}`: the record id joins the set too,
-- so that a new version of a record delivered before is told from a new record.
local versioned = ARGV[6] == '1'
-- A stream entry's fields beside the record: see EntryFields in resp.rs.
local tenant, source, format = ARGV[7], ARGV[8], ARGV[9]
local FIRST = 10
local fresh, ids, marks, taken, offsets = {}, {}, {}, {}, {}
local updates, first_seen = {}, {}
for i = FIRST, #ARGV, 3 do
  local id = ARGV[i]
  if not taken[id] and not redis.call('ZSCORE', KEYS[2], id) then
    taken[id] = true
    local offset = (i - FIRST) / 3
    fresh[#fresh + 1] = ARGV[i + 2]
    ids[#ids + 1] = id
    offsets[#offsets + 1] = offset
    marks[#marks + 1] = ARGV[i + 1]
    marks[#marks + 1] = id
    local record_id = versioned and string.match(id, '^(.*)#%x+$')
    if record_id then
      if taken[record_id] or redis.call('ZSCORE', KEYS[2], record_id) then
        updates[offset] = true
      else
        first_seen[id] = record_id
      end
      taken[record_id] = true
      marks[#marks + 1] = ARGV[i + 1]
      marks[#marks + 1] = record_id
    end
  end
end
local unheard = 0
if #fresh > 0 then
  if mode == 'list' then
    redis.call('RPUSH', KEYS[1], unpack(fresh))
    redis.call('ZADD', KEYS[2], unpack(marks))
  elseif mode == 'stream' then
    for i, record in ipairs(fresh) do
      -- Graph's id: the key without a version's `#digest` or an update's `@time`.
      local id = string.match(ids[i], '^[^@#]*')
      if maxlen > 0 then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'record', record,
          'tenant', tenant, 'source', source, 'id', id, 'format', format)
      else
        redis.call('XADD', KEYS[1], '*', 'record', record,
          'tenant', tenant, 'source', source, 'id', id, 'format', format)
      end
    end
    redis.call('ZADD', KEYS[2], unpack(marks))
  else
    redis.call('ZADD', KEYS[2], unpack(marks))
    local nobody, heard = {}, {}
    for i, record in ipairs(fresh) do
      if redis.call('PUBLISH', KEYS[1], record) == 0 and ARGV[5] ~= '1' then
        nobody[#nobody + 1] = ids[i]
        nobody[#nobody + 1] = first_seen[ids[i]]
      else
        heard[#heard + 1] = offsets[i]
      end
    end
    offsets = heard
    if #nobody > 0 then
      redis.call('ZREM', KEYS[2], unpack(nobody))
    end
    unheard = #fresh - #heard
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
-- The floor itself, under a name no record id has (FLOOR_MARK in redis.rs): every id
-- delivered at or after it is in the set, so a run whose state was lost can resume
-- there and deliver nothing twice.
if ARGV[2] ~= '-inf' then
  redis.call('ZADD', KEYS[2], ARGV[2], 'msgx floor')
end
-- Then the page offsets of the records delivered, then those of them that were a new
-- version of a record delivered before.
local reply = {#fresh - unheard, unheard}
for _, offset in ipairs(offsets) do
  reply[#reply + 1] = offset
end
for _, offset in ipairs(offsets) do
  if updates[offset] then
    reply[#reply + 1] = offset
  end
end
return reply
