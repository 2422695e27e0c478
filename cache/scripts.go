package cache

import "github.com/redis/go-redis/v9"

// The scripts run atomically on the server. Times come from the server's
// TIME, in microseconds (exact in Lua's doubles until the year 2255), so
// that all mailwards of a fleet share one clock. replicate_commands makes
// TIME before a write legal on Redis before 5; later versions ignore it.

// incrScript: KEYS[1] counter; ARGV delta, ttl in ms (0: none). The TTL is
// set only on a counter without one, i.e. when it is created.
var incrScript = redis.NewScript(`
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return v
`)

// rateScript is gcra in ratelimit.go. KEYS[1] holds the TAT; ARGV limit,
// window in µs. Returns {allowed 0|1, remaining, retry after in µs}.
var rateScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.floor(window / limit)
if interval < 1 then interval = 1 end
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local newtat = tat + interval
local allowat = newtat - window
if now < allowat then
  return {0, 0, allowat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', math.ceil((newtat - now) / 1000))
local remaining = math.floor((now - allowat) / interval)
if remaining > limit - 1 then remaining = limit - 1 end
return {1, remaining, 0}
`)

// greyScript is Memory.CheckTriplet. KEYS[1] the triplet (hash: first,
// pass), KEYS[2] the network's count of successful retries; ARGV delay
// and retry window in µs, expiry in ms, auto-allow count.
// Returns {pass 0|1, reason, retry after in µs}.
var greyScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local delay = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local autoallow = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local windowms = math.ceil(window / 1000)
if autoallow > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '') or 0
  if n >= autoallow then
    redis.call('PEXPIRE', KEYS[2], expiry)
    return {1, 'auto-allowed', 0}
  end
end
local st = redis.call('HMGET', KEYS[1], 'first', 'pass')
local first = tonumber(st[1])
if first == nil then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'first', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], windowms)
  return {0, 'new', delay}
end
if st[2] then
  redis.call('PEXPIRE', KEYS[1], expiry)
  return {1, 'known', 0}
end
if now - first < delay then
  return {0, 'early', first + delay - now}
end
if now - first > window then
  redis.call('HSET', KEYS[1], 'first', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], windowms)
  return {0, 'new', delay}
end
redis.call('HSET', KEYS[1], 'pass', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], expiry)
if autoallow > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], expiry)
end
return {1, 'retried', 0}
`)
