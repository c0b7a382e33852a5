/**
 * The Redis store's Lua scripts. Each one is the whole of one store operation (BATCH: of every
 * counter operation of one event-loop turn), so Redis runs it atomically and the request path
 * pays one round trip for it.
 *
 * A counter (settled buckets plus unsettled reservations, see Counter in store.ts) whose base key
 * is B lives in one HASH, C = B:c, so a script call costs one HMGET and one HSET per counter it
 * touches, however many of a batch's ops touch it (state() reads it, commit() writes it):
 *   S   the sum of the g fields (kept on every change, summed afresh whenever a field leaves)
 *   L   the sum of the l fields
 *   G   the lowest gone-at of the g fields, N the lowest stop of the l fields (9e15, or 1e300 as
 *       written before, for none): a
 *       prune reads the whole hash only once something in it can have left
 *   X   when C expires (script time); its TTL is set only when that is too soon
 *   g<gone>         settled amounts that stop counting at <gone> (their bucket's last ms + window)
 *   l<stop>:<gone>  unsettled reservations: they count until <stop> (the lease's end or the
 *                   window's, whichever comes first), and would leave at <gone> once settled
 * A counter's total is S + L. A stop is exact when the lease ends it; a window's end is rounded up
 * to the bucket width (the reservation counts up to one bucket longer, never shorter). A field is
 * dropped when it empties or stops, so there are at most as many as reservations in flight. Bucket widths come from the caller
 * (bucketWidth in buckets.ts).
 *
 * A reservation's record, R, is a string (JSON) naming its entries ({base, l field, window,
 * amount, width, reserved at, lease end or -1}), so settle and release find them; deleting R is
 * what makes both idempotent. Settle takes the reserved amount out of its l field (when that
 * still counts) and adds the actual one to the g field of the reservation's bucket (when that is
 * still in the window), so a settle after the lease ran out still counts.
 *
 * The previous layout (B HASH of entries, B:t, B:l, B:b, B:g) is carried over the first time a
 * counter is touched: its buckets as they were, its unsettled entries as settled at their reserved
 * amounts (an upper bound; their records' settles then change nothing).
 *
 * C carries the same hash tag as every other key, so it lives in the namespace's cluster slot.
 *
 * Time is Redis's own (TIME), so replicas with skewed clocks agree on every window. A script
 * that needs time takes an override in its ARGV: the contract tests move a fake clock through
 * it; the store never sets it otherwise.
 */

import { BUCKETS_PER_WINDOW, EXACT_MAX } from "./buckets.js";

/** Helpers every script starts with. Numbers go back to Redis as text: Lua's tostring keeps 14 digits. */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end

-- Globals read once: a global is a table lookup (two for redis.call) where a local is a register.
local call, unpack, tonumber, floor, ceil, format = redis.call, unpack, tonumber, math.floor, math.ceil, string.format

-- Numbers from ARGV and from Redis are read with '+ 0', not tonumber(): tonumber() is a C call
-- that runs strtod twice (it checks, then converts), the costliest thing a batch op did per
-- number; the arithmetic converts once, in the VM. Only for text known to be a number.
local function now_ms(override)
  if override ~= '' then return override + 0 end
  local t = call('TIME')
  return t[1] * 1000 + floor(t[2] / 1000)
end

-- ARGV texts as numbers, remembered for the script call: a batch repeats a few texts many times
-- (key numbers, each counter's max, window and bucket width, the lease, the bucket a settle goes
-- to), and 'x + 0' runs strtod (~450 instructions) where N[x] is a table lookup. Read a number
-- as 'N[x] or num(x)'.
local N = {}
local function num(x)
  local v = x + 0
  N[x] = v
  return v
end

-- Integers as %d: printf's integer path, several times cheaper than the %g that Lua's own
-- number-to-text (and Redis's, for a number passed to redis.call) takes. Remembered for the
-- script call: a batch's ops happen at one instant, so its reserves share their times, stops and
-- bucket ends, and are formatted once.
local texts = {}
local function fmt(x)
  local t = texts[x]
  if t then return t end
  if x % 1 == 0 and x < 9007199254740992 and x > -9007199254740992 then t = format('%d', x) else t = format('%.17g', x) end
  -- NaN cannot be a table key.
  if x == x then texts[x] = t end
  return t
end

-- A number for a script's reply: an integer as an integer reply (exact below 2^53), anything else
-- as text (Redis would cut a fraction off). No string made for the common case.
local function reply_num(x)
  if x % 1 == 0 and x < 9007199254740992 and x > -9007199254740992 then return x end
  return fmt(x)
end

local function bucket_start(ts, width) return floor(ts / width) * width end
local function bucket_gone(ts, width, window) return bucket_start(ts, width) + width - 1 + window end

-- "Nothing there" for G and N: a time past any window (year 287,000), written as an integer. (It
-- was 1e300, which costs a multi-precision strtod and printf every time it is read or written;
-- counters that still hold it read the same.)
local NONE = 9e15
-- Float dust left by subtracting what was added (amounts in tests are fractions): taken as 0.
local DUST = 1e-9

-- Runs cmd on key with the members in list, a thousand at a time (unpack has a stack limit).
local function batched(cmd, key, list)
  for j = 1, #list, 1000 do
    call(cmd, key, unpack(list, j, math.min(j + 999, #list)))
  end
end

-- Counters this script call has read, by base key, and the order it first read them in. Each is
-- read once (HMGET of its meta and of the fields an op names) and written once, by commit(),
-- however many ops of a batch touch it: a batch of many requests on one user's counters costs one
-- HMGET and one HSET per counter, not per op. A counter is one table made whole at once (no
-- table grows field by field): s l g n x its meta as it is now, s0 l0 g0 n0 x0 as Redis holds it
-- (flush writes those that differ), f[field] a field's value (false when absent, nil when not read
-- yet), w[field] true for a field flush must write (or delete, when false).
local counters, touched = {}, {}

local function new_counter(key, s, l, g, n, x)
  return {key = key, s = s, l = l, g = g, n = n, x = x, s0 = s, l0 = l, g0 = g, n0 = n, x0 = x, f = {}, w = {}, ttl = false}
end

-- Writes the counter's changed fields in one HSET, drops the emptied ones and sets its TTL when
-- keep() moved it. Never creates C on its own: a C that did not exist is created by keep(). The
-- argument lists are reused from flush to flush (a table grown anew each time rehashes as it grows).
local hset, hdel = {}, {}
local function flush(base, m)
  if not m.x then return end
  local k, d = 0, 0
  if m.s ~= m.s0 then hset[1], hset[2], k = 'S', fmt(m.s), 2; m.s0 = m.s end
  if m.l ~= m.l0 then hset[k + 1], hset[k + 2], k = 'L', fmt(m.l), k + 2; m.l0 = m.l end
  if m.g ~= m.g0 then hset[k + 1], hset[k + 2], k = 'G', fmt(m.g), k + 2; m.g0 = m.g end
  if m.n ~= m.n0 then hset[k + 1], hset[k + 2], k = 'N', fmt(m.n), k + 2; m.n0 = m.n end
  if m.x ~= m.x0 then hset[k + 1], hset[k + 2], k = 'X', fmt(m.x), k + 2; m.x0 = m.x end
  local f, w = m.f, m.w
  for field in pairs(w) do
    local v = f[field]
    if v then
      hset[k + 1], hset[k + 2], k = field, fmt(v), k + 2
    else
      d = d + 1
      hdel[d] = field
    end
    w[field] = nil
  end
  if k > 0 then call('HSET', m.key, unpack(hset, 1, k)) end
  if d > 0 then call('HDEL', m.key, unpack(hdel, 1, d)) end
  if m.ttl then call('PEXPIRE', m.key, fmt(m.ttl)); m.ttl = false end
end

-- Markers of the reservations whose owner settles them ('R'): no record, only a field in one
-- HASH per reserve instant and TTL (their r2 key, see marker_key), so a script call's reserves
-- write one HSET and one PEXPIRE between them, where a record was a SET of ~640 bytes each. Kept
-- here, by marker key, until commit() writes them: mkeys in first-use order, pend[mkey] the record
-- keys (false once a settle of the same call took one) and its TTL as ttl.
local mprefix, mkeys, pend = false, {}, {}

-- Writes every counter this script call changed, then the call's markers; every script that
-- touched counters ends with it. Markers last: should their write fail, the counters already
-- hold the call's reserves and settles, so its lost reply over-counts until the leases end,
-- never under-counts.
local function commit()
  for _, base in ipairs(touched) do flush(base, counters[base]) end
  for _, mkey in ipairs(mkeys) do
    local p, args, k = pend[mkey], {mkey}, 1
    for i = 1, #p do
      if p[i] then args[k + 1], args[k + 2], k = p[i], '1', k + 2 end
    end
    if k > 1 then
      for j = 2, k, 1000 do call('HSET', mkey, unpack(args, j, math.min(j + 999, k))) end
      call('PEXPIRE', mkey, p.ttl)
    end
  end
  mkeys, pend = {}, {}
end

-- Keeps C until at least 'needed' (script time): when X says it expires earlier, moves its TTL a
-- margin past that, so this happens about once a margin per counter.
local function keep(m, needed, margin, now)
  if m.x and m.x >= needed then return end
  local target = needed + margin
  m.x = target
  m.ttl = target - now
end

-- Drops the fields that stopped counting and sums the rest afresh (what is pending is written first).
local function prune(base, m, now)
  flush(base, m)
  local all = call('HGETALL', m.key)
  local s, l, g, n, stale = 0, 0, NONE, NONE, {}
  for j = 1, #all, 2 do
    local f, a = all[j], tonumber(all[j + 1])
    local kind = string.byte(f, 1)
    if kind == 103 then -- g<gone>
      local gone = tonumber(string.sub(f, 2))
      if gone <= now then stale[#stale + 1] = f else
        s = s + a
        if gone < g then g = gone end
      end
    elseif kind == 108 then -- l<stop>:<gone>
      local stop = tonumber(string.match(f, '^l(%d+)'))
      if stop <= now then stale[#stale + 1] = f else
        l = l + a
        if stop < n then n = stop end
      end
    end
  end
  if #stale > 0 then batched('HDEL', m.key, stale) end
  for _, f in ipairs(stale) do m.f[f] = false end
  m.s, m.l, m.g, m.n = s, l, g, n
  -- Written afresh whatever S, L, G and N held.
  m.s0, m.l0, m.g0, m.n0 = nil, nil, nil, nil
end

-- Settles one counter of a reservation: 'reserved' leaves in-flight field lf (when that still
-- counts; no lf: nothing to take out), and 'actual' goes into settled field gf, gone at 'gone'
-- (when it still counts then and 'inside', the reservation still in its window; no gf: nothing
-- to add). One function for release, settle and charge, not three calls per counter and settle.
local function move(m, lf, reserved, gf, gone, actual, inside, now, margin)
  local f, w = m.f, m.w
  local cur = lf and f[lf]
  if cur then
    local left = cur - reserved
    if left < DUST and left > -DUST then left = false end
    f[lf], w[lf] = left, true
    local l = m.l - reserved
    if l < DUST and l > -DUST then l = 0 end
    m.l = l
  end
  if inside and gf and gone > now and actual ~= 0 then
    f[gf], w[gf] = (f[gf] or 0) + actual, true
    m.s = m.s + actual
    if gone < m.g then m.g = gone end
    if not m.x or m.x < gone then keep(m, gone, margin, now) end
  end
end

-- Carries a counter of the previous layout over (see the header); returns whether there was one.
local function migrate(base, m, now, margin, window)
  if call('EXISTS', base, base .. ':b') == 0 then return false end
  local add_at, latest = {}, now
  local g = call('ZRANGE', base .. ':g', 0, -1, 'WITHSCORES')
  for j = 1, #g, 2 do
    local gone = tonumber(g[j + 1])
    local a = g[j] ~= '~' and tonumber(call('HGET', base .. ':b', g[j]) or '0') or 0
    if a ~= 0 and gone > now then add_at[gone] = (add_at[gone] or 0) + a end
  end
  local live = call('HGETALL', base)
  for j = 1, #live, 2 do
    local ts = live[j] ~= '~' and call('ZSCORE', base .. ':t', live[j])
    local gone = ts and tonumber(ts) + window
    if gone and gone > now then add_at[gone] = (add_at[gone] or 0) + tonumber(live[j + 1]) end
  end
  for gone, a in pairs(add_at) do
    move(m, nil, 0, 'g' .. fmt(gone), gone, a, true, now, margin)
    if gone > latest then latest = gone end
  end
  call('DEL', base, base .. ':t', base .. ':l', base .. ':b', base .. ':g')
  keep(m, latest, margin, now)
  return true
end

-- A field's value as HMGET gave it: a number, or false when absent.
local function num_or_false(v)
  if v then return v + 0 end
  return false
end

-- Counter 'base' (its meta, and fields f1 and f2 when given) as this script call sees it, pruned
-- of what left. m.s + m.l is its total; changes wait in m for commit().
local function state(base, now, margin, window, f1, f2)
  local m = counters[base]
  if not m then
    local v, key = nil, base .. ':c'
    if f2 then v = call('HMGET', key, 'S', 'L', 'G', 'N', 'X', f1, f2)
    elseif f1 then v = call('HMGET', key, 'S', 'L', 'G', 'N', 'X', f1)
    else v = call('HMGET', key, 'S', 'L', 'G', 'N', 'X') end
    if v[5] then
      -- X is written with S, L, G and N (flush), so all five are there.
      m = new_counter(key, v[1] + 0, v[2] + 0, v[3] + 0, v[4] + 0, v[5] + 0)
      if f1 then m.f[f1] = num_or_false(v[6]) end
      if f2 then m.f[f2] = num_or_false(v[7]) end
    else
      -- No X, no C: S, L, G and N are written with the first field.
      m = new_counter(key, 0, 0, NONE, NONE, false)
      m.s0, m.l0, m.g0, m.n0 = nil, nil, nil, nil
      if f1 then m.f[f1] = false end
      if f2 then m.f[f2] = false end
    end
    counters[base] = m
    touched[#touched + 1] = base
    -- What migrate() carries over is all there is.
    if not v[5] then migrate(base, m, now, margin, window) end
  else
    local f = m.f
    if f1 and f[f1] == nil then
      if f2 and f[f2] == nil then
        local v = call('HMGET', m.key, f1, f2)
        f[f1], f[f2] = num_or_false(v[1]), num_or_false(v[2])
      else
        f[f1] = num_or_false(call('HGET', m.key, f1))
      end
    elseif f2 and f[f2] == nil then
      f[f2] = num_or_false(call('HGET', m.key, f2))
    end
  end
  if m.g <= now or m.n <= now then prune(base, m, now) end
  return m
end

-- How long until what counts now frees 'excess': a settled amount leaves at its gone-at, an
-- unsettled one when it would once settled (never earlier than the truth).
local function retry_after(base, excess, now)
  local leaving = {}
  local all = call('HGETALL', base .. ':c')
  for j = 1, #all, 2 do
    local f, a = all[j], tonumber(all[j + 1])
    local kind = string.byte(f, 1)
    if kind == 103 then
      leaving[#leaving + 1] = {tonumber(string.sub(f, 2)), a}
    elseif kind == 108 then
      local stop, gone = string.match(f, '^l(%d+):(%d+)')
      if tonumber(stop) > now then leaving[#leaving + 1] = {tonumber(gone), a} end
    end
  end
  table.sort(leaving, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, l in ipairs(leaving) do
    freed = freed + l[2]
    if freed >= excess then return fmt(math.max(0, l[1] - now)) end
  end
  return false
end

-- The in-flight field of a reservation made at ts, when it stops counting, and when it would leave
-- once settled (its bucket's gone-at). It stops at the window's end rounded up to the bucket width,
-- or at the lease's end when that comes first. Settle derives the same field from the same numbers.
local function hold_field(ts, window, width, lease)
  local stop = ts + window
  if width > 1 then stop = ceil(stop / width) * width end
  -- A lease ends when it says, not up to a bucket width later (12 h for a daily budget): a dead
  -- process's reservation comes back, and a temporary override lapses, on time.
  if lease >= 0 and ts + lease < stop then stop = ts + lease end
  local gone = bucket_gone(ts, width, window)
  return 'l' .. fmt(stop) .. ':' .. fmt(gone), stop, gone
end

-- The counters a BATCH's ops name, by number, in the order its 'k' ops define them: a key with
-- the max and window it is reserved with, the bucket width those give (bucketWidth in
-- buckets.ts), and whether the key goes into a JSON string as it is (no quote, backslash,
-- control or non-ASCII byte: the client says so, as 'k' rather than 'K'; a Lua pattern looking
-- for those bytes took ~15,000 instructions per key). A batch names each once, however many of its ops touch it. Each also keeps the
-- names it last worked out: the in-flight field (and the record's texts) of a reserve at rnow
-- with lease rlease, and the fields of a settle of a reservation made at sts with lease slease;
-- a batch's reserves happen at one instant, and its settles mostly of reserves made at a few.
local specs, nspec = {}, 0
local function define(base, max, window, wtext, plain)
  local width = 1
  if max > ${EXACT_MAX} then width = math.max(1, ceil(window / ${BUCKETS_PER_WINDOW})) end
  nspec = nspec + 1
  specs[nspec] = {base = base, max = max, window = window, width = width, wtext = wtext, dtext = fmt(width), plain = plain,
    rnow = false, rlease = false, rlf = false, rstop = false, rpre = false, rpost = false,
    sts = false, slease = false, slf = false, sgone = false, sgf = false}
end

-- The counter lists a BATCH's reserves and settles name, by number, in the order its 'g' ops
-- define them: a list of counter numbers (define), with its length as n. A request's reserve and
-- settle name their counters with one argument, not one each (every argument costs the server
-- ~1,000 instructions), and a batch's requests mostly share one list.
local groups, ngroup = {}, 0

-- The r2 key of the markers of reservations made at ts (its text, as the reserve replied it) on
-- counter list g: <prefix><ts>:<ttl>, ttl what their record's would have been (the list's
-- longest window and bucket, plus the margin), so every call that writes one key gives it the
-- same expiry. A settle works it out again as its reserve did; remembered on g for its last ts.
local function marker_key(g, ts, margin)
  if g.mts == ts then return g.mkey, g.mttl end
  local longest = g.longest
  if not longest then
    longest = 0
    for i = 1, g.n do
      local sp = specs[g[i]]
      local span = sp.window + sp.width
      if span > longest then longest = span end
    end
    g.longest = longest
  end
  local ttl = fmt(longest + margin)
  local mkey = mprefix .. ts .. ':' .. ttl
  g.mts, g.mkey, g.mttl = ts, mkey, ttl
  return mkey, ttl
end

-- Takes reservation rkey's marker out of mkey: true when it was there (this settle is the first).
-- A marker this very call reserved is still waiting for commit().
local function take_marker(mkey, rkey)
  local p = pend[mkey]
  if p then
    for i = 1, #p do
      if p[i] == rkey then
        p[i] = false
        return true
      end
    end
  end
  return call('HDEL', mkey, rkey) == 1
end

-- Which counters of a settle are settled at what they reserved ('1': no actual amount follows) and
-- which are not ('0'), as the settle's mask text says; worked out once per text and call. given:
-- how many actual amounts follow.
local masks = {}
local function mask_of(t)
  local m, given = {}, 0
  for i = 1, #t do
    m[i] = string.byte(t, i) == 49
    if not m[i] then given = given + 1 end
  end
  m.given = given
  masks[t] = m
  return m
end

-- All-or-nothing reservation across the counters of list g (groups) under record R (rkey), at
-- 'now'; ARGV[b...] holds their amounts. lease -1: none. own: the reserving process settles it
-- itself (it knows what it reserved), so no record is written, only a marker (marker_key).
-- Writes 1, total..., ts or 0, index, used, retryAfterMs or false into the batch's reply 'out'
-- after its o-th entry, and returns the reply's new length. Into the flat reply, not a table of
-- its own: Redis turns every table a script returns into a reply by probing it for err, ok and
-- five more fields (a string made and a lookup each) and a deferred length, ~9,000 instructions
-- per reserve.
local held, parts = {}, {'['}
local function reserve(rkey, g, b, now, lease, margin, out, o, own)
  local A, n = ARGV, g.n
  for i = 1, n do
    local t = A[b + i - 1]
    local sp = specs[g[i]]
    local amount = N[t] or num(t)
    if sp.rnow ~= now or sp.rlease ~= lease then
      local lf, stop = hold_field(now, sp.window, sp.width, lease)
      sp.rnow, sp.rlease, sp.rlf, sp.rstop = now, lease, lf, stop
      -- The record's entry but its amount: {base, l field, window, amount, width, reserved at,
      -- lease end or -1}, all strings.
      sp.rpre = '["' .. sp.base .. '","' .. lf .. '","' .. sp.wtext .. '","'
      sp.rpost = '","' .. sp.dtext .. '","' .. fmt(now) .. '","' .. (lease >= 0 and fmt(now + lease) or '-1') .. '"]'
    end
    local base, lf = sp.base, sp.rlf
    local m = counters[base]
    if not m or m.f[lf] == nil or m.g <= now or m.n <= now then m = state(base, now, margin, sp.window, lf) end
    held[i] = m
    local used = m.s + m.l
    if used + amount > sp.max then
      local retry = false
      if amount <= sp.max then
        flush(base, m)
        retry = retry_after(base, used + amount - sp.max, now)
      end
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = 0, i - 1, reply_num(used), retry
      return o + 4
    end
    local total = used + amount
    if total % 1 ~= 0 or total >= 9007199254740992 or total <= -9007199254740992 then total = fmt(total) end
    out[o + 1 + i] = total
  end
  -- The record is JSON written by hand from the texts as they came (cjson.encode would print each
  -- number with printf's %.14g, and costs more than the rest of a reserve), joined once: Redis's
  -- Lua hashes every byte of every string it makes, so no string is made per entry. A base that
  -- would need escaping goes through cjson.
  local longest, escape = 0, false
  for i = 1, n do
    local t = A[b + i - 1]
    local sp, m, amount = specs[g[i]], held[i], N[t]
    if amount ~= 0 then
      local lf, f = sp.rlf, m.f
      f[lf], m.w[lf] = (f[lf] or 0) + amount, true
      m.l = m.l + amount
      if sp.rstop < m.n then m.n = sp.rstop end
    end
    local span = sp.window + sp.width
    if not m.x or m.x < now + span then keep(m, now + span, margin, now) end
    if not own then
      if not sp.plain then escape = true end
      parts[4 * i - 2], parts[4 * i - 1], parts[4 * i], parts[4 * i + 1] = sp.rpre, t, sp.rpost, ','
      if span > longest then longest = span end
    end
  end
  local rec, ts = nil, fmt(now)
  if own then
    local mkey, ttl = marker_key(g, ts, margin)
    local p = pend[mkey]
    if not p then
      p = {ttl = ttl}
      pend[mkey] = p
      mkeys[#mkeys + 1] = mkey
    end
    p[#p + 1] = rkey
    out[o + 1], out[o + n + 2] = 1, ts
    return o + n + 2
  end
  if escape then
    local entries, ends = {}, lease >= 0 and fmt(now + lease) or '-1'
    for i = 1, n do
      local sp = specs[g[i]]
      entries[i] = {sp.base, sp.rlf, sp.wtext, A[b + i - 1], sp.dtext, ts, ends}
    end
    rec = cjson.encode(entries)
  else
    parts[4 * n + 1] = ']'
    rec = table.concat(parts, '', 1, 4 * n + 1)
  end
  -- A reused id takes the name over; the older entries keep counting until their lease ends.
  call('SET', rkey, rec, 'PX', fmt(longest + margin))
  out[o + 1], out[o + n + 2] = 1, ts
  return o + n + 2
end

-- Settles reservation record R at the actual amounts (in reserve order; nil or '' keeps the
-- reserved one) and forgets R and its checkpoint (R:cp). Returns 0 when R was already gone.
-- Settles one entry of a reservation: its reserved amount leaves in-flight field lf, the actual
-- one (nil or '': the reserved one) goes into the bucket of its time, ts.
local function settle_entry(base, lf, window, reserved, width, ts, actual, now, margin)
  local amount = reserved
  if actual ~= nil and actual ~= '' then amount = tonumber(actual) end
  local gone = bucket_gone(ts, width, window)
  local gf = 'g' .. fmt(gone)
  -- Nothing once the reservation left its window: it would count no more.
  move(state(base, now, margin, window, lf, gf), lf, reserved, gf, gone, amount, ts > now - window, now, margin)
end

local function settle_rec(rkey, actual, now, margin)
  local rec = call('GET', rkey)
  if not rec then return 0 end
  local entries = cjson.decode(rec)
  -- Every counter is read before R goes: a read that fails leaves R for the settle's retry.
  for _, e in ipairs(entries) do
    if #e >= 7 then state(e[1], now, margin, tonumber(e[3]), e[2]) end
  end
  call('DEL', rkey, rkey .. ':cp')
  for i, e in ipairs(entries) do
    -- An entry of the previous layout was charged at its reserved amount when carried over.
    if #e >= 7 then settle_entry(e[1], e[2], tonumber(e[3]), tonumber(e[4]), tonumber(e[5]), tonumber(e[6]), actual[i], now, margin) end
  end
  return 1
end

-- settle_rec when the caller still knows what it reserved at ts with this lease: R need not be
-- read back, only deleted, which still makes the settle happen once. The counters are list g
-- (groups); ARGV[b...] holds their reserved amounts, then the actual amounts of those that mask
-- mk (mask_of) does not say settle at what they reserved (a request counter's 1, nearly always).
-- The fields are worked out as the reserve did. Returns 1, or 0 when R was already gone, and
-- where the next op's arguments start. own: reserved with a marker (ts is its text, tstext); the
-- marker taken is what makes the settle happen once, or R when a checkpoint turned the marker
-- into a record (CHECKPOINT).
local function settle_held(rkey, ts, lease, g, mk, b, now, margin, own, tstext)
  local A, n = ARGV, g.n
  local k = b + n
  -- Every counter is read before R goes: a read that fails (a key of the wrong type) leaves R,
  -- and the settle's retry, for the script writes nothing back when it stops on an error.
  for i = 1, n do
    local sp = specs[g[i]]
    if sp.sts ~= ts or sp.slease ~= lease then
      local lf, _, gone = hold_field(ts, sp.window, sp.width, lease)
      sp.sts, sp.slease, sp.slf, sp.sgone, sp.sgf = ts, lease, lf, gone, 'g' .. fmt(gone)
    end
    local lf, gf = sp.slf, sp.sgf
    local m = counters[sp.base]
    if not m or m.f[lf] == nil or m.f[gf] == nil or m.g <= now or m.n <= now then
      m = state(sp.base, now, margin, sp.window, lf, gf)
    end
    held[i] = m
  end
  if own then
    if not take_marker(marker_key(g, tstext, margin), rkey) and call('DEL', rkey, rkey .. ':cp') == 0 then return 0, k + mk.given end
  elseif call('DEL', rkey, rkey .. ':cp') == 0 then
    return 0, k + mk.given
  end
  for i = 1, n do
    local t = A[b + i - 1]
    local reserved = N[t] or num(t)
    local actual = reserved
    if not mk[i] then
      t = A[k]
      actual, k = N[t] or num(t), k + 1
    end
    local sp = specs[g[i]]
    -- Nothing once the reservation left its window: it would count no more.
    move(held[i], sp.slf, reserved, sp.sgf, sp.sgone, actual, ts > now - sp.window, now, margin)
  end
  return 1, k
end

-- Drops a reservation's entries entirely (Store.release). Returns 0 when R was already gone.
local function release_rec(rkey, now, margin)
  local rec = call('GET', rkey)
  if not rec then return 0 end
  call('DEL', rkey, rkey .. ':cp')
  for _, e in ipairs(cjson.decode(rec)) do
    if #e >= 7 then
      local lf = e[2]
      move(state(e[1], now, margin, tonumber(e[3]), lf), lf, tonumber(e[4]), nil, 0, 0, false, now, margin)
    end
  end
  return 1
end

-- Current totals of the counters 'bases' over their windows (Store.peek), as text; with detail,
-- each total followed by its in-flight part, L (Store.peekDetail). Written into 'out' after its
-- o-th entry; returns the new length.
local function peek(bases, windows, now, margin, detail, out, o)
  for i = 1, #bases do
    local m = state(bases[i], now, margin, tonumber(windows[i]))
    o = o + 1
    out[o] = fmt(m.s + m.l)
    if detail then
      o = o + 1
      out[o] = fmt(m.l)
    end
  end
  return o
end

-- Appends usage records (JSON) to stream skey, once per batch marker mkey: a batch whose reply
-- was lost is sent again and must not be written twice. A batch is one stream entry whose fields
-- are 'r' and a record each, up to 200 records an entry (a page of queryUsage stays bounded):
-- an XADD per record cost ~6,500 server instructions more per record. Entries older than the
-- retention are trimmed (MINID ~, once per call), and the stream expires after a whole retention
-- unwritten. The marker is set after the records: an XADD that fails leaves the batch unwritten,
-- to be sent again.
local function append_usage(skey, mkey, now, retention, records)
  if call('EXISTS', mkey) == 1 then return 0 end
  local args, head = {skey, 'MINID', '~', fmt(math.max(0, now - retention)), '*'}, 5
  for j = 1, #records, 200 do
    local k = head
    for i = j, math.min(j + 199, #records) do
      args[k + 1], args[k + 2], k = 'r', records[i], k + 2
    end
    call('XADD', unpack(args, 1, k))
    args, head = {skey, '*'}, 2
  end
  call('SET', mkey, '1', 'PX', 3600000)
  call('PEXPIRE', skey, fmt(retention))
  return #records
end

-- The latest lease end among reservation record R's entries, or nil when none holds a lease.
local function lease_end(rec)
  local due
  for _, e in ipairs(cjson.decode(rec)) do
    local l
    if #e >= 7 then
      l = tonumber(e[7])
      if l < 0 then l = nil end
    else
      local z = call('ZSCORE', e[1] .. ':l', e[2])
      l = z and tonumber(z)
    end
    if l and (not due or l > due) then due = l end
  end
  return due
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
 * one round trip and one script call for all of them. The reply is one flat array, each op's
 * answer after the one before it (a reserve's n + 2 or 4 entries, a peek's n or 2n, one for the
 * others): the client knows each op's n, and a table per answer cost Redis ~9,000 instructions.
 * KEYS: the counter base keys and usage keys the ops name (an op refers to a key by its index).
 * ARGV[1] key TTL margin ms, then the ops, each a letter and its fields. Every argument costs the
 * server ~1,000 instructions (parsing, a Redis object, a Lua string), so the ops carry what the
 * script cannot work out itself, and a record key (R) comes as it is, not as a key and an index:
 *   t now                                  the time of the ops that follow (an override; '' for
 *                                          Redis's TIME, which is what they use without any 't')
 *   l lease                                the lease of the reserves and settles that follow
 *                                          (ms, -1 for none, which is what they have without any 'l')
 *   k base max window                      defines the next counter number (1, 2, ...): no reply;
 *                                          K: the same for a base that JSON must escape
 *   g n counter * n                        defines the next counter list number (1, 2, ...): no reply
 *   P prefix                               the prefix of the marker keys (r2) of the R and T ops that follow
 *   r R list amount * n                    reserve: 1 total... ts, or 0 index used retry
 *   R R list amount * n                    the same for a reservation whose owner settles it: a
 *                                          marker instead of a record (see marker_key)
 *   s R n actual * n                       settle from R's record: 1, or 0 when R was gone
 *   S R ts list mask reserved * n actual * m
 *                                          settle what the caller reserved at ts with this lease
 *                                          (reading R no more); mask: a character per counter, 1
 *                                          when it settles at what it reserved (no actual amount
 *                                          follows), 0 otherwise (m of them): 1, or 0
 *   T R ts list mask reserved * n actual * m
 *                                          the same for a reservation made by R: takes its marker
 *                                          (or, once a checkpoint turned it into one, its record)
 *   x R                                    release: 1 or 0
 *   u S M retention n record * n           usage records into stream S once per batch marker M
 *                                          (APPEND_USAGE): count, or 0
 *   p n (base window) * n                  peek: total...
 *   d n (base window) * n                  peekDetail: (total reserved)...
 */
export const BATCH = script(
  "batch",
  `
local margin = ARGV[1] + 0
local A, argc = ARGV, #ARGV
-- One TIME for the whole batch: the script runs atomically, so every op happens at one instant.
-- A batch under a test clock starts with a 't'.
local clock = A[2] ~= 't' and now_ms('')
local now, lease = clock, -1
-- ARGV[from .. from + n - 1] as a list, copied inside the op's pcall: unpack() stops at Lua's
-- C stack (~8,000 values) with an error no op could answer alone.
local function args_list(from, n)
  local list, A = {}, ARGV
  for i = 1, n do list[i] = A[from + i - 1] end
  return list
end
local function settle_args(rkey, from, n, now, margin) return settle_rec(rkey, args_list(from, n), now, margin) end
local function usage_args(skey, mkey, now, retention, from, n) return append_usage(skey, mkey, now, retention, args_list(from, n)) end
-- Each op runs under pcall: an op that fails (a key of the wrong type) is that op's error reply,
-- and the batch's other ops still happen and are committed. Failing the whole call instead would
-- keep what its earlier ops wrote straight away (records, usage entries) but not their counters.
local function answer(ok, r, ...)
  if ok then return r, ... end
  if type(r) == 'table' and r.err then return r end
  return {err = 'ERR tollgate batch: ' .. tostring(r)}
end
local out, o, a = {}, 0, 2
-- For an op that writes its answer into 'out' itself (reserve, peek): the reply's new length, or
-- on failure its error reply as one entry, and what it wrote before failing (at most 'most'
-- entries) taken out again.
local function flat(o, most, ok, r)
  if ok then return r end
  out[o + 1] = answer(false, r)
  for j = o + 2, o + most do out[j] = nil end
  return o + 1
end
while a <= argc do
  local op = A[a]
  if op == 'r' or op == 'R' then
    local g = groups[N[A[a + 2]] or num(A[a + 2])]
    o = flat(o, g.n + 2, pcall(reserve, A[a + 1], g, a + 3, now, lease, margin, out, o, op == 'R'))
    a = a + 3 + g.n
  elseif op == 'S' or op == 'T' then
    local g, t = groups[N[A[a + 3]] or num(A[a + 3])], A[a + 4]
    local mk = masks[t] or mask_of(t)
    o = o + 1
    local r, k = answer(pcall(settle_held, A[a + 1], N[A[a + 2]] or num(A[a + 2]), lease, g, mk, a + 5, now, margin, op == 'T', A[a + 2]))
    out[o], a = r, k or a + 5 + g.n + mk.given
  elseif op == 'P' then
    mprefix = A[a + 1]
    a = a + 2
  elseif op == 'g' then
    local n = N[A[a + 1]] or num(A[a + 1])
    local g = {n = n}
    for i = 1, n do
      local t = A[a + 1 + i]
      g[i] = N[t] or num(t)
    end
    ngroup = ngroup + 1
    groups[ngroup] = g
    a = a + 2 + n
  elseif op == 'l' then
    lease = N[A[a + 1]] or num(A[a + 1])
    a = a + 2
  elseif op == 'k' or op == 'K' then
    define(KEYS[N[A[a + 1]] or num(A[a + 1])], N[A[a + 2]] or num(A[a + 2]), N[A[a + 3]] or num(A[a + 3]), A[a + 3], op == 'k')
    a = a + 4
  elseif op == 't' then
    if A[a + 1] ~= '' then now = tonumber(A[a + 1]) else
      if not clock then clock = now_ms('') end
      now = clock
    end
    a = a + 2
  elseif op == 's' then
    local n = A[a + 2] + 0
    o = o + 1
    out[o] = answer(pcall(settle_args, A[a + 1], a + 3, n, now, margin))
    a = a + 3 + n
  elseif op == 'x' then
    o = o + 1
    out[o] = answer(pcall(release_rec, A[a + 1], now, margin))
    a = a + 2
  elseif op == 'u' then
    local n = A[a + 4] + 0
    o = o + 1
    out[o] = answer(pcall(usage_args, KEYS[A[a + 1] + 0], KEYS[A[a + 2] + 0], now, A[a + 3] + 0, a + 5, n))
    a = a + 5 + n
  elseif op == 'p' or op == 'd' then
    local n = A[a + 1] + 0
    local bases, windows = {}, {}
    for i = 1, n do
      bases[i] = KEYS[N[A[a + 2 * i]] or num(A[a + 2 * i])]
      windows[i] = A[a + 1 + 2 * i]
    end
    o = flat(o, 2 * n, pcall(peek, bases, windows, now, margin, op == 'd', out, o))
    a = a + 2 + 2 * n
  else
    commit()
    return redis.error_reply('tollgate batch: unknown op ' .. tostring(op))
  end
end
commit()
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
  local gone = bucket_gone(at, width, window)
  local gf = 'g' .. fmt(gone)
  local m = state(base, now, margin, window, gf)
  move(m, nil, 0, gf, gone, tonumber(amount), true, now, margin)
end
commit()
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
 * inside the JSON. A batch is one entry, a field 'r' per record. Entries older than the retention
 * are trimmed (MINID ~), and the stream expires when nothing is written for a whole retention.
 * KEYS[1] usage stream, KEYS[2] batch once-marker
 * ARGV[1] now override or '', ARGV[2] retention ms, ARGV[3..] records as JSON
 */
export const APPEND_USAGE = script(
  "append_usage",
  `
return append_usage(KEYS[1], KEYS[2], now_ms(ARGV[1]), tonumber(ARGV[2]), {unpack(ARGV, 3)})
`,
);

/**
 * Keeps what an open stream delivered beside its reservation (Store.checkpoint): R:cp, a HASH of
 * s (the settlements, [[R, [amount...]], ...] as JSON) and r (the usage record, JSON kept as
 * sent), indexed in the checkpoint ZSET by the reservation's lease end. R:cp expires with R.
 * Nothing when R is gone (settled or released) or holds no lease.
 * A reservation made with a marker (BATCH's 'R') has no R: the first checkpoint that names it
 * turns the marker into the record the reserve would have written (ARGV[3]), so RECOVER, in this
 * build or an older one, settles it from R as any other; from then on R, not the marker, makes
 * its settle happen once. A marker already taken (settled, released) writes nothing.
 * KEYS[1] reservation record R, KEYS[2] checkpoint ZSET; ARGV[1] settlements, ARGV[2] record,
 * then, when reservations are to be turned into records: ARGV[3] [[R, ts, lease, [[base, max,
 * window, amount], ...]], ...] as JSON (all texts, as the reserve sent and replied them), ARGV[4]
 * the marker key prefix, ARGV[5] key TTL margin ms, ARGV[6] now override or ''
 */
export const CHECKPOINT = script(
  "checkpoint",
  `
if ARGV[3] then
  mprefix = ARGV[4]
  local margin, now = ARGV[5] + 0, now_ms(ARGV[6])
  for _, pr in ipairs(cjson.decode(ARGV[3])) do
    local rkey, ts, lease, cs = pr[1], pr[2], pr[3] + 0, pr[4]
    local g = {n = #cs}
    for i, c in ipairs(cs) do
      define(c[1], c[2] + 0, c[3] + 0, c[3], true)
      g[i] = nspec
    end
    local mkey, ttl = marker_key(g, ts, margin)
    local left = ts + ttl - now
    if left > 0 and redis.call('HDEL', mkey, rkey) == 1 then
      local entries, t, ends = {}, ts + 0, lease >= 0 and fmt(ts + lease) or '-1'
      for i, c in ipairs(cs) do
        local sp = specs[g[i]]
        entries[i] = {sp.base, (hold_field(t, sp.window, sp.width, lease)), sp.wtext, c[4], sp.dtext, ts, ends}
      end
      redis.call('SET', rkey, cjson.encode(entries), 'PX', fmt(ceil(left)))
    end
  end
end
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
commit()
return out
`,
);

export const SCRIPTS = [BATCH, CHECKPOINT, RECOVER, CHARGE, SCORE, DISTINCT, PUT_KEY, LIST_KEYS, REVOKE_KEY, APPEND_USAGE] as const;
