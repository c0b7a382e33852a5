/**
 * The Redis store's Lua scripts. Each one is the whole of one store operation, so Redis runs it
 * atomically and the request path pays one round trip for it.
 *
 * Layout of a counter (settled buckets plus unsettled reservations, see Counter in store.ts) whose
 * base key is B:
 *   B     HASH  entry id -> amount, for every unsettled entry that counts (lease running)
 *   B:t   ZSET  entry id by reservation time: unsettled entries still inside the window, counted
 *               or lapsed (lease ran out: no longer counted, but a late settle still finds its time)
 *   B:l   ZSET  entry id by lease end: unsettled entries that have a lease and still count
 *   B:b   HASH  bucket start -> settled amount in that bucket
 *   B:g   ZSET  bucket start by gone-at (the bucket's last ms + window: the first instant it no
 *               longer counts)
 * Settle moves an entry's actual amount into the bucket of its reservation time and forgets the
 * entry; a counter therefore holds at most ~65 buckets plus its in-flight reservations, and a
 * reserve reads only those. Bucket widths come from the caller (bucketWidth in buckets.ts): 1 ms
 * for a max up to 64 (exact), else ceil(window / 64). A reservation's record, R, is a string
 * (JSON) naming its entries, so settle and release find them; deleting R is what makes both
 * idempotent.
 *
 * Companion keys (B:t, B:l, B:b, B:g) are derived inside the scripts by suffix rather than passed
 * in KEYS; they carry the same hash tag as B, so they live in the same cluster slot.
 *
 * Time is Redis's own (TIME), so replicas with skewed clocks agree on every window. ARGV[1] of
 * every script that needs time overrides it with a fixed instant: the contract tests move a fake
 * clock through it; the store never sets it otherwise.
 */

/** Helpers every script starts with. Numbers go back to Redis as text: Lua's tostring keeps 14 digits. */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end

local function now_ms(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(x)
  if x == math.floor(x) and math.abs(x) < 9007199254740992 then return string.format('%d', x) end
  return string.format('%.17g', x)
end

local function bucket_start(ts, width) return math.floor(ts / width) * width end
local function bucket_gone(ts, width, window) return bucket_start(ts, width) + width - 1 + window end

-- Forgets unsettled entries that left the window, stops counting lapsed leases, drops buckets
-- that left the window; returns the total: O(buckets + unsettled entries).
local function prune(base, window, now)
  local times, leases, gone = base .. ':t', base .. ':l', base .. ':g'
  local cut = fmt(now - window)
  local old = redis.call('ZRANGEBYSCORE', times, '-inf', cut)
  if #old > 0 then
    for _, eid in ipairs(old) do
      redis.call('HDEL', base, eid)
      redis.call('ZREM', leases, eid)
    end
    redis.call('ZREMRANGEBYSCORE', times, '-inf', cut)
  end
  local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(now))
  if #lapsed > 0 then
    for _, eid in ipairs(lapsed) do redis.call('HDEL', base, eid) end
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', fmt(now))
  end
  local stale = redis.call('ZRANGEBYSCORE', gone, '-inf', fmt(now))
  if #stale > 0 then
    for _, b in ipairs(stale) do redis.call('HDEL', base .. ':b', b) end
    redis.call('ZREMRANGEBYSCORE', gone, '-inf', fmt(now))
  end
  local sum = 0
  for _, a in ipairs(redis.call('HVALS', base)) do sum = sum + tonumber(a) end
  for _, a in ipairs(redis.call('HVALS', base .. ':b')) do sum = sum + tonumber(a) end
  return sum
end

-- Never shortens a TTL: the entry-id sequence must outlive every entry that took an id from it.
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, fmt(ms)) end
end

-- Adds a settled amount to its bucket; a bucket keeps the latest gone-at any amount gave it.
local function add_bucket(base, ts, width, window, amount, now, margin)
  local gone = bucket_gone(ts, width, window)
  if gone <= now or tonumber(amount) == 0 then return end
  local b = fmt(bucket_start(ts, width))
  local cur = tonumber(redis.call('HGET', base .. ':b', b) or '0')
  redis.call('HSET', base .. ':b', b, fmt(cur + tonumber(amount)))
  local g = redis.call('ZSCORE', base .. ':g', b)
  if not g or tonumber(g) < gone then redis.call('ZADD', base .. ':g', fmt(gone), b) end
  extend(base .. ':b', gone - now + margin)
  extend(base .. ':g', gone - now + margin)
end

local function expire_counter(base, ms)
  redis.call('PEXPIRE', base, fmt(ms))
  redis.call('PEXPIRE', base .. ':t', fmt(ms))
  redis.call('PEXPIRE', base .. ':l', fmt(ms))
  extend(base .. ':b', ms)
  extend(base .. ':g', ms)
end
`;

export interface LuaScript {
  readonly name: string;
  readonly lua: string;
}

function script(name: string, body: string): LuaScript {
  return { name, lua: PRELUDE + body };
}

/**
 * All-or-nothing reservation across counters (Store.reserve).
 * KEYS[1] entry-id sequence (INCR), KEYS[2] reservation record R, KEYS[3..] counter base keys
 * ARGV[1] now override or '', ARGV[2] lease ms (-1: no lease), ARGV[3] key TTL margin ms,
 * then per counter i (from 0): ARGV[4+4i] max, ARGV[5+4i] amount, ARGV[6+4i] window ms,
 * ARGV[7+4i] bucket width ms
 * Returns {1, total...} or {0, index, used, retryAfterMs or nil}; numbers as text.
 */
export const RESERVE = script(
  "reserve",
  `
local now = now_ms(ARGV[1])
local lease, margin = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS - 2

-- How long until what counts now frees 'excess': buckets leave at their gone-at, an unsettled
-- entry when it would once settled into a bucket of this width (never earlier than the truth).
local function retry_after(base, window, width, excess)
  local leaving = {}
  local g = redis.call('ZRANGE', base .. ':g', 0, -1, 'WITHSCORES')
  for j = 1, #g, 2 do
    local a = redis.call('HGET', base .. ':b', g[j])
    if a then leaving[#leaving + 1] = {tonumber(g[j + 1]), tonumber(a)} end
  end
  local live = redis.call('HGETALL', base)
  for j = 1, #live, 2 do
    local ts = redis.call('ZSCORE', base .. ':t', live[j])
    if ts then leaving[#leaving + 1] = {bucket_gone(tonumber(ts), width, window), tonumber(live[j + 1])} end
  end
  table.sort(leaving, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, l in ipairs(leaving) do
    freed = freed + l[2]
    if freed >= excess then return fmt(math.max(0, l[1] - now)) end
  end
  return false
end

local totals = {1}
for i = 1, n do
  local max, amount = tonumber(ARGV[4 * i]), tonumber(ARGV[4 * i + 1])
  local window, width = tonumber(ARGV[4 * i + 2]), tonumber(ARGV[4 * i + 3])
  local used = prune(KEYS[i + 2], window, now)
  if used + amount > max then
    local retry = false
    if amount <= max then retry = retry_after(KEYS[i + 2], window, width, used + amount - max) end
    return {0, i - 1, fmt(used), retry}
  end
  totals[i + 1] = fmt(used + amount)
end

local last = redis.call('INCRBY', KEYS[1], n)
local entries, longest = {}, 0
for i = 1, n do
  local base, amount = KEYS[i + 2], ARGV[4 * i + 1]
  local window, width = tonumber(ARGV[4 * i + 2]), tonumber(ARGV[4 * i + 3])
  local eid = fmt(last - n + i)
  redis.call('ZADD', base .. ':t', fmt(now), eid)
  redis.call('HSET', base, eid, amount)
  if lease >= 0 then redis.call('ZADD', base .. ':l', fmt(now + lease), eid) end
  expire_counter(base, window + width + margin)
  entries[i] = {base, eid, window, amount, width}
  if window + width > longest then longest = window + width end
end
-- A reused id takes the name over; the older entries keep counting until their lease ends.
redis.call('SET', KEYS[2], cjson.encode(entries), 'PX', fmt(longest + margin))
extend(KEYS[1], longest + margin)
return totals
`,
);

/**
 * Moves each entry's actual amount into the bucket of its reservation time and forgets the entry
 * (Store.settle); a lapsed entry still in its window counts again this way.
 * KEYS[1] reservation record R
 * ARGV[1] now override or '', ARGV[2] key TTL margin ms,
 * ARGV[3..] actual amount per counter in reserve order ('' keeps the reserved one)
 */
export const SETTLE = script(
  "settle",
  `
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
redis.call('DEL', KEYS[1])
local now = now_ms(ARGV[1])
local margin = tonumber(ARGV[2])
for i, e in ipairs(cjson.decode(rec)) do
  local base, eid, window, reserved, width = e[1], e[2], tonumber(e[3]), e[4], tonumber(e[5] or 1)
  prune(base, window, now)
  local ts = redis.call('ZSCORE', base .. ':t', eid)
  if ts then
    local actual = ARGV[i + 2]
    if actual == nil or actual == '' then actual = reserved end
    redis.call('HDEL', base, eid)
    redis.call('ZREM', base .. ':t', eid)
    redis.call('ZREM', base .. ':l', eid)
    add_bucket(base, tonumber(ts), width, window, actual, now, margin)
  end
end
return 1
`,
);

/**
 * Drops a reservation's entries entirely (Store.release).
 * KEYS[1] reservation record R; no ARGV.
 */
export const RELEASE = script(
  "release",
  `
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
redis.call('DEL', KEYS[1])
for _, e in ipairs(cjson.decode(rec)) do
  local base, eid = e[1], e[2]
  redis.call('HDEL', base, eid)
  redis.call('ZREM', base .. ':t', eid)
  redis.call('ZREM', base .. ':l', eid)
end
return 1
`,
);

/**
 * Current totals (Store.peek). KEYS[1..] counter base keys
 * ARGV[1] now override or '', ARGV[2..] window ms per counter. Returns totals as text.
 */
export const PEEK = script(
  "peek",
  `
local now = now_ms(ARGV[1])
local out = {}
for i = 1, #KEYS do out[i] = fmt(prune(KEYS[i], tonumber(ARGV[i + 1]), now)) end
return out
`,
);

/**
 * Adds settled amounts to the buckets of the times they were spent, once per id: what a process
 * charged to its local store while Redis was away (FailoverStore). No max: the spend already happened.
 * KEYS[1] once-marker, KEYS[2..] counter base keys
 * ARGV[1] now override or '', ARGV[2] key TTL margin ms,
 * then per counter i (from 0): ARGV[3+4i] amount, ARGV[4+4i] window ms, ARGV[5+4i] spent at
 * (epoch ms), ARGV[6+4i] bucket width ms
 */
export const CHARGE = script(
  "charge",
  `
local now = now_ms(ARGV[1])
local margin = tonumber(ARGV[2])
local n = #KEYS - 1
local longest = 0
for i = 1, n do
  local span = tonumber(ARGV[4 * i]) + tonumber(ARGV[4 * i + 2])
  if span > longest then longest = span end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', fmt(longest + margin)) then return 0 end
for i = 1, n do
  local base, amount, window = KEYS[i + 1], ARGV[4 * i - 1], tonumber(ARGV[4 * i])
  local at, width = math.min(tonumber(ARGV[4 * i + 1]), now), tonumber(ARGV[4 * i + 2])
  prune(base, window, now)
  add_bucket(base, at, width, window, amount, now, margin)
end
return 1
`,
);

/**
 * A decaying score (Store.score): halves every half-life; forgotten after 64 half-lives unseen.
 * KEYS[1] score HASH {v, t}
 * ARGV[1] now override or '', ARGV[2] delta, ARGV[3] half-life ms, ARGV[4] longest TTL ms
 */
export const SCORE = script(
  "score",
  `
local now = now_ms(ARGV[1])
local delta, half, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'v', 't')
local value = delta
if s[1] then value = tonumber(s[1]) * math.pow(0.5, (now - tonumber(s[2])) / half) + delta end
if delta ~= 0 or s[1] then
  redis.call('HSET', KEYS[1], 'v', fmt(value), 't', fmt(now))
  redis.call('PEXPIRE', KEYS[1], fmt(math.floor(math.min(64 * half, cap))))
end
return fmt(value)
`,
);

/**
 * A set whose members are forgotten ttl after they were last seen (Store.distinct).
 * KEYS[1] ZSET member by expiry
 * ARGV[1] now override or '', ARGV[2] member, ARGV[3] ttl ms. Returns the member count.
 */
export const DISTINCT = script(
  "distinct",
  `
local now = now_ms(ARGV[1])
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], fmt(now + ttl), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, tonumber(last[2]) - now))) end
return redis.call('ZCARD', KEYS[1])
`,
);

/**
 * Stores an API key (Store.putKey), replacing one with the same hash.
 * KEYS[1] key HASH {json, id, revokedAt}, KEYS[2] listing ZSET hash by first insertion,
 * KEYS[3] SET of hashes filed under the new id, KEYS[4] listing sequence
 * ARGV[1] json (without revokedAt), ARGV[2] hash, ARGV[3] id, ARGV[4] revokedAt or '',
 * ARGV[5] prefix of the by-id SETs (the old id's SET is derived from it)
 */
export const PUT_KEY = script(
  "put_key",
  `
local old = redis.call('HGET', KEYS[1], 'id')
if old and old ~= ARGV[3] then redis.call('SREM', ARGV[5] .. old, ARGV[2]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'id', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'revokedAt', ARGV[4]) end
if redis.call('ZSCORE', KEYS[2], ARGV[2]) == false then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[2])
end
redis.call('SADD', KEYS[3], ARGV[2])
return 1
`,
);

/**
 * Every key in first-insertion order (Store.listKeys). KEYS[1] listing ZSET
 * ARGV[1] prefix of the key HASHes. Returns {json, revokedAt or false, ...}.
 */
export const LIST_KEYS = script(
  "list_keys",
  `
local out = {}
for _, hash in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = redis.call('HMGET', ARGV[1] .. hash, 'json', 'revokedAt')
  if k[1] then
    out[#out + 1] = k[1]
    out[#out + 1] = k[2]
  end
end
return out
`,
);

/**
 * Revokes every key filed under an id, keeping the first revocation time (Store.revokeKey).
 * KEYS[1] SET of hashes filed under the id
 * ARGV[1] now override or '', ARGV[2] prefix of the key HASHes. Returns 1 when any key had that id.
 */
export const REVOKE_KEY = script(
  "revoke_key",
  `
local hashes = redis.call('SMEMBERS', KEYS[1])
if #hashes == 0 then return 0 end
local now = fmt(now_ms(ARGV[1]))
for _, hash in ipairs(hashes) do redis.call('HSETNX', ARGV[2] .. hash, 'revokedAt', now) end
return 1
`,
);

/**
 * Appends a batch of usage records to the stream, once per batch id: a batch whose reply was lost
 * is sent again, and must not be written twice. Stream ids are Redis time; the record's own ts is
 * inside the JSON. Entries older than the retention are trimmed (MINID ~), and the stream expires
 * when nothing is written for a whole retention.
 * KEYS[1] usage stream, KEYS[2] batch once-marker
 * ARGV[1] now override or '', ARGV[2] retention ms, ARGV[3..] records as JSON
 */
export const APPEND_USAGE = script(
  "append_usage",
  `
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', 3600000) then return 0 end
local now = now_ms(ARGV[1])
local retention = tonumber(ARGV[2])
local minid = fmt(math.max(0, now - retention))
for i = 3, #ARGV do redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'r', ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], fmt(retention))
return #ARGV - 2
`,
);

export const SCRIPTS = [RESERVE, SETTLE, RELEASE, PEEK, CHARGE, SCORE, DISTINCT, PUT_KEY, LIST_KEYS, REVOKE_KEY, APPEND_USAGE] as const;
