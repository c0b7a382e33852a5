import { decodeCursor, encodeCursor, FAILED_KEEP_MS, type OutboxCount, type OutboxItem, type OutboxMessage, type OutboxPage, type OutboxStore } from "../core/outbox.js";
import { script, type LuaScript } from "./redis-scripts.js";

/**
 * The outbox in Redis. Every operation is one script, so a claim is atomic across every gateway
 * sharing the Redis. With P the store's key prefix (its hash tag included) and M = "sink|id":
 *   P ob:i:M       HASH  one message: sink id kind payload state created aged attempts next err keep
 *                        (a delivered one keeps only its id's memory: payload emptied, PEXPIRE at created + keep)
 *   P ob:q:SINK    ZSET  M by next (due time, or its claim's lease end): what a claim of SINK reads
 *   P ob:p         ZSET  pending M by created (the admin listing)
 *   P ob:f         ZSET  failed M by failure time; forgotten FAILED_KEEP_MS later
 *   P ob:n         HASH  "state|sink|kind" -> count of pending and failed messages (the metrics gauge)
 * KEYS[1..3] of every script are ob:n, ob:p, ob:f; the per-message keys are derived from ARGV[2] (P)
 * and carry the same hash tag. ARGV[1] overrides the time for tests (as in redis-scripts.ts).
 */
const OUTBOX_PRELUDE = `
local N, PENDING, FAILED = KEYS[1], KEYS[2], KEYS[3]
local P = ARGV[2]
local now = now_ms(ARGV[1])
local FIELDS = {'sink', 'id', 'kind', 'payload', 'state', 'created', 'aged', 'attempts', 'next', 'err'}
local function item_key(m) return P .. 'ob:i:' .. m end
local function queue(sink) return P .. 'ob:q:' .. sink end
local function count(state, sink, kind, by) redis.call('HINCRBY', N, state .. '|' .. sink .. '|' .. kind, by) end
local function fields(m) return redis.call('HMGET', item_key(m), unpack(FIELDS)) end
-- Failed messages past their keep, a hundred per call: the set stays bounded without a sweeper.
local function sweep_failed()
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', FAILED, '-inf', fmt(now - ${FAILED_KEEP_MS}), 'LIMIT', 0, 100)) do
    local f = redis.call('HMGET', item_key(m), 'state', 'sink', 'kind')
    if f[1] == 'failed' then
      redis.call('DEL', item_key(m))
      count('failed', f[2], f[3], -1)
    end
    redis.call('ZREM', FAILED, m)
  end
end
`;

const outboxScript = (name: string, body: string): LuaScript => script(name, OUTBOX_PRELUDE + body);

/** ARGV[3] keep ms, then per message: sink, id, kind, payload. Returns how many were new. */
export const OUTBOX_ADD = outboxScript(
  "outbox_add",
  `
sweep_failed()
local keep, added = ARGV[3], 0
for i = 4, #ARGV, 4 do
  local sink, id, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local m = sink .. '|' .. id
  local f = redis.call('HMGET', item_key(m), 'state', 'created', 'keep')
  -- A delivered id is remembered until created + keep by the store's clock, not only by its TTL.
  if f[1] == 'delivered' and tonumber(f[2]) + tonumber(f[3]) <= now then f[1] = false end
  if not f[1] then
    redis.call('HSET', item_key(m), 'sink', sink, 'id', id, 'kind', kind, 'payload', ARGV[i + 3], 'state', 'pending',
      'created', fmt(now), 'aged', fmt(now), 'attempts', '0', 'next', fmt(now), 'err', '', 'keep', keep)
    redis.call('PERSIST', item_key(m))
    redis.call('ZADD', queue(sink), fmt(now), m)
    redis.call('ZADD', PENDING, fmt(now), m)
    count('pending', sink, kind, 1)
    added = added + 1
  end
end
return added
`,
);

/** ARGV[3] sink, ARGV[4] limit, ARGV[5] lease ms. Returns the claimed messages' FIELDS. */
export const OUTBOX_CLAIM = outboxScript(
  "outbox_claim",
  `
local sink, lease = ARGV[3], tonumber(ARGV[5])
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', queue(sink), '-inf', fmt(now), 'LIMIT', 0, tonumber(ARGV[4]))) do
  if redis.call('HGET', item_key(m), 'state') == 'pending' then
    redis.call('HINCRBY', item_key(m), 'attempts', 1)
    redis.call('HSET', item_key(m), 'next', fmt(now + lease))
    redis.call('ZADD', queue(sink), fmt(now + lease), m)
    out[#out + 1] = fields(m)
  else
    redis.call('ZREM', queue(sink), m)
  end
end
return out
`,
);

/** ARGV[3] sink, ARGV[4..] ids. */
export const OUTBOX_DELIVERED = outboxScript(
  "outbox_delivered",
  `
local sink = ARGV[3]
for i = 4, #ARGV do
  local m = sink .. '|' .. ARGV[i]
  local f = redis.call('HMGET', item_key(m), 'state', 'kind', 'created', 'keep')
  if f[1] == 'pending' or f[1] == 'failed' then
    redis.call('ZREM', queue(sink), m)
    redis.call('ZREM', f[1] == 'pending' and PENDING or FAILED, m)
    count(f[1], sink, f[2], -1)
    redis.call('HSET', item_key(m), 'state', 'delivered', 'payload', '')
    redis.call('PEXPIRE', item_key(m), fmt(math.max(1, tonumber(f[3]) + tonumber(f[4]) - now)))
  end
end
return 1
`,
);

/** ARGV[3] sink, ARGV[4] id, ARGV[5] delay ms, ARGV[6] error. */
export const OUTBOX_RETRY_LATER = outboxScript(
  "outbox_retry_later",
  `
local m = ARGV[3] .. '|' .. ARGV[4]
if redis.call('HGET', item_key(m), 'state') ~= 'pending' then return 0 end
local due = now + tonumber(ARGV[5])
redis.call('HSET', item_key(m), 'next', fmt(due), 'err', ARGV[6])
redis.call('ZADD', queue(ARGV[3]), fmt(due), m)
return 1
`,
);

/** ARGV[3] sink, ARGV[4] id, ARGV[5] error. */
export const OUTBOX_FAIL = outboxScript(
  "outbox_fail",
  `
local sink, m = ARGV[3], ARGV[3] .. '|' .. ARGV[4]
local f = redis.call('HMGET', item_key(m), 'state', 'kind')
if f[1] ~= 'pending' then return 0 end
redis.call('ZREM', queue(sink), m)
redis.call('ZREM', PENDING, m)
count('pending', sink, f[2], -1)
redis.call('HSET', item_key(m), 'state', 'failed', 'err', ARGV[5])
redis.call('ZADD', FAILED, fmt(now), m)
count('failed', sink, f[2], 1)
return 1
`,
);

/** ARGV[3] sink, ARGV[4] id. Returns the message's FIELDS, or nil. */
export const OUTBOX_RETRY = outboxScript(
  "outbox_retry",
  `
local sink, m = ARGV[3], ARGV[3] .. '|' .. ARGV[4]
local f = redis.call('HMGET', item_key(m), 'state', 'kind', 'created')
if not f[1] then return nil end
if f[1] == 'failed' then
  redis.call('ZREM', FAILED, m)
  count('failed', sink, f[2], -1)
  redis.call('HSET', item_key(m), 'state', 'pending', 'attempts', '0', 'aged', fmt(now))
  redis.call('ZADD', PENDING, f[3], m)
  count('pending', sink, f[2], 1)
end
if f[1] ~= 'delivered' then
  redis.call('HSET', item_key(m), 'next', fmt(now))
  redis.call('ZADD', queue(sink), fmt(now), m)
end
return fields(m)
`,
);

/** ARGV[3] 'pending' or 'failed', ARGV[4] offset, ARGV[5] limit. Returns {total, FIELDS...}. */
export const OUTBOX_LIST = outboxScript(
  "outbox_list",
  `
local set = ARGV[3] == 'failed' and FAILED or PENDING
local offset = tonumber(ARGV[4])
local out = {redis.call('ZCARD', set)}
for _, m in ipairs(redis.call('ZRANGE', set, offset, offset + tonumber(ARGV[5]) - 1)) do
  local f = fields(m)
  if f[1] then out[#out + 1] = f end
end
return out
`,
);

export const OUTBOX_SCRIPTS = [OUTBOX_ADD, OUTBOX_CLAIM, OUTBOX_DELIVERED, OUTBOX_RETRY_LATER, OUTBOX_FAIL, OUTBOX_RETRY, OUTBOX_LIST] as const;

/** Runs a script through the store (EVALSHA, NOSCRIPT, outage handling: RedisStore.run). */
export type RunScript = (script: LuaScript, keys: string[], args: string[]) => Promise<unknown>;

/** The Redis store's outbox: shared by every gateway on the Redis, kept as Redis keeps its data. */
export class RedisOutbox implements OutboxStore {
  private readonly keys: string[];

  constructor(
    private readonly run: RunScript,
    private readonly prefix: string,
    /** The time override for tests, or "" for Redis's own clock. */
    private readonly now: () => string,
  ) {
    this.keys = [`${prefix}ob:n`, `${prefix}ob:p`, `${prefix}ob:f`];
  }

  private call(script: LuaScript, args: (string | number)[]): Promise<unknown> {
    return this.run(script, this.keys, [this.now(), this.prefix, ...args.map(String)]);
  }

  async add(messages: OutboxMessage[], keepMs: number): Promise<number> {
    if (!messages.length) return 0;
    return Number(await this.call(OUTBOX_ADD, [keepMs, ...messages.flatMap((m) => [m.sink, m.id, m.kind, m.payload])]));
  }

  async claim(sink: string, limit: number, leaseMs: number): Promise<OutboxItem[]> {
    return ((await this.call(OUTBOX_CLAIM, [sink, limit, leaseMs])) as string[][]).map(item);
  }

  async delivered(sink: string, ids: string[]): Promise<void> {
    if (ids.length) await this.call(OUTBOX_DELIVERED, [sink, ...ids]);
  }

  async retryLater(sink: string, id: string, delayMs: number, error: string): Promise<void> {
    await this.call(OUTBOX_RETRY_LATER, [sink, id, delayMs, error]);
  }

  async fail(sink: string, id: string, error: string): Promise<void> {
    await this.call(OUTBOX_FAIL, [sink, id, error]);
  }

  async retry(sink: string, id: string): Promise<OutboxItem | undefined> {
    const reply = (await this.call(OUTBOX_RETRY, [sink, id])) as string[] | null;
    return reply ? item(reply) : undefined;
  }

  async list(q: { state: "pending" | "failed"; limit: number; cursor?: string }): Promise<OutboxPage> {
    const offset = decodeCursor(q.cursor);
    const [total, ...rows] = (await this.call(OUTBOX_LIST, [q.state, offset, q.limit])) as [number, ...string[][]];
    return { items: rows.map(item), total: Number(total), cursor: offset + q.limit < Number(total) ? encodeCursor(offset + q.limit) : undefined };
  }

  async counts(): Promise<OutboxCount[]> {
    // Read-only and not atomic with anything: a plain HGETALL through the same script runner is not needed.
    const reply = (await this.call(OUTBOX_COUNTS, [])) as string[];
    const out: OutboxCount[] = [];
    for (let i = 0; i < reply.length; i += 2) {
      const n = Number(reply[i + 1]);
      const [state, sink, ...kind] = reply[i]!.split("|");
      if (n > 0 && (state === "pending" || state === "failed")) out.push({ state, sink: sink!, kind: kind.join("|"), count: n });
    }
    return out;
  }
}

/** Returns ob:n as a flat field/value list. */
const OUTBOX_COUNTS = outboxScript("outbox_counts", `return redis.call('HGETALL', N)`);

function item(f: string[]): OutboxItem {
  const [sink, id, kind, payload, state, created, aged, attempts, next, err] = f;
  return { sink: sink!, id: id!, kind: kind!, payload: payload!, state: state as OutboxItem["state"], createdAt: Number(created), agedFrom: Number(aged), attempts: Number(attempts), nextAt: Number(next), lastError: err ? err : null };
}
