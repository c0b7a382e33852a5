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
 *   B:b   HASH  bucket start -> settled amount in that bucket, plus the counter's bookkeeping:
 *               s   the sum of the buckets (kept on settle, summed afresh whenever a bucket leaves)
 *               nt, nl, ng  lower bounds of the lowest score in B:t, B:l, B:g: a prune looks into
 *                   a ZSET only once something in it can have left (1e300: empty)
 *               x   when all five keys expire (script time); TTLs are set only when that is too soon
 *   B:g   ZSET  bucket start by gone-at (the bucket's last ms + window: the first instant it no
 *               longer counts)
 * B, B:t, B:l and B:g also hold a sentinel member '~' (amount 0, score +inf) that no scan or sum
 * sees: it keeps them from vanishing when emptied, and with them the TTL that x vouches for.
 * Settle moves an entry's actual amount into the bucket of its reservation time and forgets the
 * entry; a counter therefore holds at most ~65 buckets plus its in-flight reservations, and a
 * reserve reads only those. Bucket widths come from the caller (bucketWidth in buckets.ts): 1 ms
 * for a max up to 64 (exact), else ceil(window / 64). A reservation's record, R, is a string
 * (JSON) naming its entries ({base, id, window, amount, width, reserved at}; records from before
 * 'reserved at' are still read), so settle and release find them; deleting R is what makes both
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

-- The sentinel member of B, B:t, B:l and B:g (see the header), and "nothing there" for the
-- lower bounds in B:b.
local SENTINEL = '~'
local NONE = 1e300

-- Runs cmd on key with the members in list, a thousand at a time (unpack has a stack limit).
local function batched(cmd, key, list)
  for j = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, j, math.min(j + 999, #list)))
  end
end

-- Lowest score in a ZSET, ignoring the sentinel (whose score is +inf anyway); NONE when empty.
local function zmin(key)
  local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #r == 0 or r[1] == SENTINEL then return NONE end
  return tonumber(r[2])
end

-- Writes the counter's changed B:b fields (meta and buckets) in one HSET. Never creates B:b on
-- its own: a B:b that did not exist is created by keep(), which gives it its TTL.
local function flush(base, m)
  if not m.exists then return end
  local args = {}
  for f, v in pairs(m.dirty) do
    args[#args + 1] = f
    args[#args + 1] = fmt(v)
  end
  if #args > 0 then redis.call('HSET', base .. ':b', unpack(args)) end
  m.dirty = {}
end

-- Forgets unsettled entries that left the window, stops counting lapsed leases, drops buckets
-- that left the window: each only when its lower bound in B:b says something can have left.
-- Returns the counter's state m (B:b's fields, changes pending in m.dirty for flush) and, with
-- want_live, the total: the bucket sum plus the counted unsettled entries (HVALS of B). With
-- 'bucket' it also reads that bucket's amount (m.cur; nil when it may have been dropped here).
local function prune(base, window, now, want_live, bucket)
  local times, leases, gone, buckets = base .. ':t', base .. ':l', base .. ':g', base .. ':b'
  local v = redis.call('HMGET', buckets, 's', 'nt', 'nl', 'ng', 'x', bucket or 's')
  local m = {s = tonumber(v[1]), nt = tonumber(v[2]), nl = tonumber(v[3]), ng = tonumber(v[4]), x = tonumber(v[5]), dirty = {}}
  if bucket then m.cur = {bucket, tonumber(v[6] or '0')} end
  m.exists = v[1] ~= false or v[2] ~= false or v[3] ~= false or v[4] ~= false or v[5] ~= false
  local cut = now - window
  if not (m.nt and m.nt > cut) then
    local old = redis.call('ZRANGEBYSCORE', times, '-inf', fmt(cut))
    if #old > 0 then
      batched('HDEL', base, old)
      batched('ZREM', leases, old)
      redis.call('ZREMRANGEBYSCORE', times, '-inf', fmt(cut))
    end
    m.nt = zmin(times)
    m.dirty.nt = m.nt
  end
  if not (m.nl and m.nl > now) then
    local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(now))
    if #lapsed > 0 then
      batched('HDEL', base, lapsed)
      redis.call('ZREMRANGEBYSCORE', leases, '-inf', fmt(now))
    end
    m.nl = zmin(leases)
    m.dirty.nl = m.nl
  end
  if not (m.ng and m.ng > now) then
    local stale = redis.call('ZRANGEBYSCORE', gone, '-inf', fmt(now))
    if #stale > 0 then
      batched('HDEL', buckets, stale)
      redis.call('ZREMRANGEBYSCORE', gone, '-inf', fmt(now))
      m.s = nil
      m.cur = nil
    end
    m.ng = zmin(gone)
    m.dirty.ng = m.ng
  end
  if m.s == nil then
    -- Summed afresh after buckets left (and for a B:b from before the running sum): exact again.
    local sum, all = 0, redis.call('HGETALL', buckets)
    for j = 1, #all, 2 do
      if tonumber(all[j]) then sum = sum + tonumber(all[j + 1]) end
    end
    if #all > 0 then m.exists = true end
    m.s = sum
    m.dirty.s = sum
  end
  if not want_live then return m end
  local total = m.s
  for _, a in ipairs(redis.call('HVALS', base)) do total = total + tonumber(a) end
  return m, total
end

-- Keeps all five keys of a counter until at least 'needed' (script time): when B:b's x says they
-- expire earlier, (re)creates the sentinels and sets every TTL a margin past 'needed', so this
-- runs about once a margin per counter. The sentinels keep B, B:t, B:l and B:g from vanishing
-- when emptied, which would drop their TTL with them.
local function keep(base, m, needed, margin, now)
  if m.x and m.x >= needed then return end
  local target = needed + margin
  redis.call('HSET', base, SENTINEL, '0')
  redis.call('ZADD', base .. ':t', '+inf', SENTINEL)
  redis.call('ZADD', base .. ':l', '+inf', SENTINEL)
  redis.call('ZADD', base .. ':g', '+inf', SENTINEL)
  m.x = target
  m.dirty.x = target
  m.exists = true
  flush(base, m)
  local ms = fmt(target - now)
  for _, k in ipairs({base, base .. ':t', base .. ':l', base .. ':b', base .. ':g'}) do redis.call('PEXPIRE', k, ms) end
end

-- Never shortens a TTL: the entry-id sequence must outlive every entry that took an id from it.
-- Extends a margin further than asked, so most calls find the TTL long enough and only read it.
local function extend(key, ms, margin)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, fmt(ms + margin)) end
end

-- Adds a settled amount to its bucket and to the running sum (written by the caller's flush); a
-- bucket keeps the latest gone-at any amount gave it.
local function add_bucket(base, m, ts, width, window, amount, now, margin)
  local gone = bucket_gone(ts, width, window)
  amount = tonumber(amount)
  if gone <= now or amount == 0 then return end
  keep(base, m, gone + margin, margin, now)
  local b = fmt(bucket_start(ts, width))
  local cur
  if m.cur and m.cur[1] == b then cur = m.cur[2] else cur = tonumber(redis.call('HGET', base .. ':b', b) or '0') end
  m.dirty[b] = cur + amount
  m.s = m.s + amount
  m.dirty.s = m.s
  redis.call('ZADD', base .. ':g', 'GT', fmt(gone), b)
  if gone < m.ng then
    m.ng = gone
    m.dirty.ng = gone
  end
end

-- Settles reservation record R at the actual amounts (in reserve order; nil or '' keeps the
-- reserved one) and forgets R and its checkpoint (R:cp). Returns 0 when R was already gone.
-- A lapsed entry still in its window counts again this way.
local function settle_rec(rkey, actual, now, margin)
  local rec = redis.call('GET', rkey)
  if not rec then return 0 end
  redis.call('DEL', rkey, rkey .. ':cp')
  for i, e in ipairs(cjson.decode(rec)) do
    local base, eid, window, reserved, width = e[1], e[2], tonumber(e[3]), e[4], tonumber(e[5] or 1)
    -- The reservation time is in the record (records written before it was are looked up in B:t);
    -- the entry is still there exactly when ZREM finds it after the prune.
    local ts = tonumber(e[6])
    local m = prune(base, window, now, false, ts and fmt(bucket_start(ts, width)))
    if not ts then ts = tonumber(redis.call('ZSCORE', base .. ':t', eid)) end
    if ts and redis.call('ZREM', base .. ':t', eid) == 1 then
      local amount = actual[i]
      if amount == nil or amount == '' then amount = reserved end
      redis.call('HDEL', base, eid)
      redis.call('ZREM', base .. ':l', eid)
      add_bucket(base, m, tonumber(ts), width, window, amount, now, margin)
    end
    flush(base, m)
  end
  return 1
end

-- The latest lease end among reservation record R's entries that still hold a lease, or nil.
local function lease_end(rec)
  local due
  for _, e in ipairs(cjson.decode(rec)) do
    local z = redis.call('ZSCORE', e[1] .. ':l', e[2])
    local l = z and tonumber(z)
    if l and (not due or l > due) then due = l end
  end
  return due
end

-- How long until what counts now frees 'excess': buckets leave at their gone-at, an unsettled
-- entry when it would once settled into a bucket of this width (never earlier than the truth).
local function retry_after(base, window, width, excess, now)
  local leaving = {}
  local g = redis.call('ZRANGE', base .. ':g', 0, -1, 'WITHSCORES')
  for j = 1, #g, 2 do
    local a = redis.call('HGET', base .. ':b', g[j])
    if a then leaving[#leaving + 1] = {tonumber(g[j + 1]), tonumber(a)} end
  end
  local live = redis.call('HGETALL', base)
  for j = 1, #live, 2 do
    local ts = live[j] ~= SENTINEL and redis.call('ZSCORE', base .. ':t', live[j])
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

-- All-or-nothing reservation across the counters 'bases' (Store.reserve), under record R (rkey)
-- with entry ids from the sequence 'seq'. specs holds four strings per counter: max, amount,
-- window ms, bucket width ms. lease -1: none. Returns {1, total...} or {0, index, used,
-- retryAfterMs or false}; numbers as text.
local function reserve(seq, rkey, bases, specs, now, lease, margin)
  local n = #bases
  local totals, state = {1}, {}
  for i = 1, n do
    local max, amount = tonumber(specs[4 * i - 3]), tonumber(specs[4 * i - 2])
    local window, width = tonumber(specs[4 * i - 1]), tonumber(specs[4 * i])
    local m, used = prune(bases[i], window, now, true)
    state[i] = m
    if used + amount > max then
      for j = 1, i do flush(bases[j], state[j]) end
      local retry = false
      if amount <= max then retry = retry_after(bases[i], window, width, used + amount - max, now) end
      return {0, i - 1, fmt(used), retry}
    end
    totals[i + 1] = fmt(used + amount)
  end

  local last = redis.call('INCRBY', seq, n)
  local entries, longest = {}, 0
  for i = 1, n do
    local base, amount = bases[i], specs[4 * i - 2]
    local window, width = tonumber(specs[4 * i - 1]), tonumber(specs[4 * i])
    local eid, m = fmt(last - n + i), state[i]
    keep(base, m, now + window + width + margin, margin, now)
    redis.call('ZADD', base .. ':t', fmt(now), eid)
    if now < m.nt then
      m.nt = now
      m.dirty.nt = now
    end
    redis.call('HSET', base, eid, amount)
    if lease >= 0 then
      redis.call('ZADD', base .. ':l', fmt(now + lease), eid)
      if now + lease < m.nl then
        m.nl = now + lease
        m.dirty.nl = now + lease
      end
    end
    flush(base, m)
    entries[i] = {base, eid, window, amount, width, now}
    if window + width > longest then longest = window + width end
  end
  -- A reused id takes the name over; the older entries keep counting until their lease ends.
  redis.call('SET', rkey, cjson.encode(entries), 'PX', fmt(longest + margin))
  extend(seq, longest + margin, margin)
  return totals
end

-- Drops reservation record R's entries entirely (Store.release). Returns 0 when R was already gone.
local function release_rec(rkey)
  local rec = redis.call('GET', rkey)
  if not rec then return 0 end
  redis.call('DEL', rkey, rkey .. ':cp')
  for _, e in ipairs(cjson.decode(rec)) do
    local base, eid = e[1], e[2]
    redis.call('HDEL', base, eid)
    redis.call('ZREM', base .. ':t', eid)
    redis.call('ZREM', base .. ':l', eid)
  end
  return 1
end

-- Current totals of the counters 'bases' over their windows (Store.peek), as text.
local function peek(bases, windows, now)
  local out = {}
  for i = 1, #bases do
    local m, total = prune(bases[i], tonumber(windows[i]), now, true)
    flush(bases[i], m)
    out[i] = fmt(total)
  end
  return out
end
`;

export interface LuaScript {
  readonly name: string;
  readonly lua: string;
}

export function script(name: string, body: string): LuaScript {
  return { name, lua: PRELUDE + body };
}

/**
 * The counter operations of one event-loop turn, several requests' at once, run in call order:
 * one round trip and one script call for all of them, each answered on its own (in op order).
 * KEYS[1] entry-id sequence, KEYS[2..] every record and counter base key the ops name (an op
 * refers to a key by its index in KEYS). ARGV[1] key TTL margin ms, then the ops, each a letter
 * and its fields (now is an override or '', as everywhere):
 *   r now R lease n (base max amount window width) * n   reserve: {1, total...} or {0, index, used, retry}
 *   s now R n actual * n                                    settle: 1, or 0 when R was gone
 *   x R                                                     release: 1 or 0
 *   p now n (base window) * n                               peek: {total...}
 */
export const BATCH = script(
  "batch",
  `
local margin = tonumber(ARGV[1])
local a = 2
local function nxt()
  a = a + 1
  return ARGV[a - 1]
end
-- One TIME for the whole batch: the script runs atomically, so every op happens at one instant.
local clock
local function at(override)
  if override ~= '' then return tonumber(override) end
  if not clock then clock = now_ms('') end
  return clock
end
local out = {}
while a <= #ARGV do
  local op = nxt()
  if op == 'r' then
    local now, rkey, lease, n = at(nxt()), KEYS[tonumber(nxt())], tonumber(nxt()), tonumber(nxt())
    local bases, specs = {}, {}
    for i = 1, n do
      bases[i] = KEYS[tonumber(nxt())]
      for j = 1, 4 do specs[#specs + 1] = nxt() end
    end
    out[#out + 1] = reserve(KEYS[1], rkey, bases, specs, now, lease, margin)
  elseif op == 's' then
    local now, rkey, n = at(nxt()), KEYS[tonumber(nxt())], tonumber(nxt())
    local actual = {}
    for i = 1, n do actual[i] = nxt() end
    out[#out + 1] = settle_rec(rkey, actual, now, margin)
  elseif op == 'x' then
    out[#out + 1] = release_rec(KEYS[tonumber(nxt())])
  elseif op == 'p' then
    local now, n = at(nxt()), tonumber(nxt())
    local bases, windows = {}, {}
    for i = 1, n do
      bases[i] = KEYS[tonumber(nxt())]
      windows[i] = nxt()
    end
    out[#out + 1] = peek(bases, windows, now)
  else
    return redis.error_reply('tollgate batch: unknown op ' .. tostring(op))
  end
end
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
  local m = prune(base, window, now, false)
  add_bucket(base, m, at, width, window, amount, now, margin)
  flush(base, m)
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

/**
 * Keeps what an open stream delivered beside its reservation (Store.checkpoint): R:cp, a HASH of
 * s (the settlements, [[R, [amount...]], ...] as JSON) and r (the usage record, JSON kept as
 * sent), indexed in the checkpoint ZSET by the reservation's lease end. R:cp expires with R.
 * Nothing when R is gone (settled or released) or holds no lease.
 * KEYS[1] reservation record R, KEYS[2] checkpoint ZSET; ARGV[1] settlements, ARGV[2] record
 */
export const CHECKPOINT = script(
  "checkpoint",
  `
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
local due = lease_end(rec)
local ttl = redis.call('PTTL', KEYS[1])
if not due or ttl <= 0 then return 0 end
redis.call('HSET', KEYS[1] .. ':cp', 's', ARGV[1], 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1] .. ':cp', ttl)
redis.call('ZADD', KEYS[2], fmt(due), KEYS[1])
return 1
`,
);

/**
 * Settles the checkpointed reservations whose leases ran out at their checkpoints and appends
 * their usage records (Store.recover); one script, so across processes each is settled and
 * recorded once. A checkpoint whose reservation is gone is dropped; one whose lease was found
 * still running is looked at again at its end.
 * KEYS[1] checkpoint ZSET, KEYS[2] usage stream
 * ARGV[1] now override or '', ARGV[2] key TTL margin ms, ARGV[3] usage retention ms
 * Returns the records written, as JSON.
 */
export const RECOVER = script(
  "recover",
  `
local now = now_ms(ARGV[1])
local margin, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, rkey in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now), 'LIMIT', 0, 100)) do
  local cp = redis.call('HMGET', rkey .. ':cp', 's', 'r')
  local rec = cp[1] and redis.call('GET', rkey)
  local due = rec and lease_end(rec)
  if due and due > now then
    redis.call('ZADD', KEYS[1], fmt(due), rkey)
  else
    redis.call('ZREM', KEYS[1], rkey)
    if rec then
      for _, s in ipairs(cjson.decode(cp[1])) do settle_rec(s[1], s[2], now, margin) end
      redis.call('DEL', rkey .. ':cp')
      redis.call('XADD', KEYS[2], 'MINID', '~', fmt(math.max(0, now - retention)), '*', 'r', cp[2])
      redis.call('PEXPIRE', KEYS[2], fmt(retention))
      out[#out + 1] = cp[2]
    end
  end
end
return out
`,
);

export const SCRIPTS = [BATCH, CHECKPOINT, RECOVER, CHARGE, SCORE, DISTINCT, PUT_KEY, LIST_KEYS, REVOKE_KEY, APPEND_USAGE] as const;
