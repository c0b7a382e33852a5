import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * WAL checkpoints off the event loop.
 *
 * Left to SQLite, a checkpoint runs inside whichever commit takes the WAL past
 * `wal_autocheckpoint` pages: it copies the pages into the database file and fsyncs twice, and
 * the first commit after it restarts the WAL and fsyncs its new header. On the gateway's
 * connection that is the event loop blocked for ~10 ms every ~1,000 pages (~450 requests), every
 * request in flight waiting (phase 9d measured it: 3 % of commits, 70 % of the time spent
 * committing; p99 +5.7 ms over the floor's). Here a worker thread with its own connection does
 * all of it, with the same `synchronous` setting (so the same durability):
 *
 * - every restartPages / STEPS_PER_RESTART pages the store commits, a PASSIVE checkpoint: it copies and fsyncs without
 *   any lock the store's commits take, so they go on meanwhile;
 * - once the WAL is past `restartPages` (or the store has been idle IDLE_MS), it makes the WAL
 *   start over: the store holds its commits (asynchronously) while a FULL checkpoint copies the
 *   few pages committed since and a no-op write restarts the WAL, paying the header's fsync in the
 *   worker. The store's connection restarts it itself only when it commits first. Another
 *   connection in the way (a reader on an old snapshot, another process writing) makes the FULL
 *   or the write busy: the store's commits are released at once and the restart tried later,
 *   since waiting would hold them without bringing that connection's end any closer.
 *
 * The store's connection keeps `wal_autocheckpoint` at SAFETY_FACTOR × restartPages, so the WAL
 * stays bounded if the worker falls behind or dies; the store only counts its commits here.
 */
export interface CheckpointerOptions {
  /** WAL pages past which the worker makes the WAL start over; the file's size stays about this. */
  restartPages: number;
  /** Told once the worker is gone for good (it failed or was closed): the store checkpoints itself again. */
  onExit: (err?: Error) => void;
}

/**
 * PASSIVE checkpoints per restart: each copies about restartPages / this many pages (or what the
 * store wrote before it went idle), so a restart finds little left to copy while the store waits.
 */
const STEPS_PER_RESTART = 4;
/** How often the worker looks at the commit count: a wake-up costs the process CPU too. */
const POLL_MS = 50;
/** A store that committed nothing for this long is idle: the WAL starts over, off its commits' path. */
const IDLE_MS = 250;
/** The store's own auto-checkpoint, as a bound: this many times the worker's restart point. */
export const SAFETY_FACTOR = 4;

/** Node has had it since 16; TypeScript's lib declares it from ES2024 on. */
interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number, timeout: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

const COMMITS = 0;
const QUIET = 1;
const WRITING = 2;
const QUIET_MAX_MS = 50;
/** A restart found busy is tried again after POLL_MS, doubling up to this. */
const RETRY_MAX_MS = 1_000;

/** Runs in the worker (as CommonJS, from a string: the tests run this module from TypeScript sources). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const { path, restartPages, stepPages, pollMs, idleMs, quietMs, retryMaxMs } = workerData;
const shared = new Int32Array(workerData.shared);
const COMMITS = 0, QUIET = 1, WRITING = 2;
const db = new Database(path, { fileMustExist: true });
// Never wait for a lock: a checkpoint or restart that cannot have one now tries again later.
db.pragma("busy_timeout = 0");
// A checkpoint syncs as its own connection's setting says: the same as the store's.
db.pragma("synchronous = NORMAL");
db.pragma("wal_autocheckpoint = 0");
const passive = db.prepare("PRAGMA wal_checkpoint(PASSIVE)").raw();
const full = db.prepare("PRAGMA wal_checkpoint(FULL)").raw();
const begin = db.prepare("BEGIN IMMEDIATE");
const commit = db.prepare("COMMIT");
const rollback = db.prepare("ROLLBACK");
const userVersion = db.prepare("PRAGMA user_version").pluck();
const stats = { checkpoints: 0, restarts: 0, full: 0, busy: 0, quiets: 0, quietMs: 0, maxQuietMs: 0 };
let seen = 0; // the commit count when the last checkpoint started
let lastCount = 0;
let changedAt = Date.now();
let behind = false; // the last checkpoint left pages in the WAL (a reader held them, or the store committed meanwhile)
let lastLog = -1; // the WAL's length after the last checkpoint, -1 after a restart
let perCommit = 10; // pages a commit of the store writes, learnt from the checkpoints
let retryAt = 0; // after a restart found busy: no new try before this
let retries = 0; // restarts found busy in a row

// The first write after a checkpoint that copied everything restarts the WAL. Rewriting the
// user_version with its own value is a write that changes nothing (the write lock is held
// between the read and the write, so a migration cannot slip in between).
function restart() {
  try {
    begin.run();
  } catch {
    return false;
  }
  try {
    db.pragma("user_version = " + Number(userVersion.get()));
    commit.run();
    stats.restarts++;
    return true;
  } catch {
    if (db.inTransaction) rollback.run();
    return false;
  }
}

function tick() {
  const now = Date.now();
  const count = Atomics.load(shared, COMMITS);
  if (count !== lastCount) [lastCount, changedAt] = [count, now];
  if (count === seen && !behind) return;
  const idle = now - changedAt >= idleMs;
  if (!idle && (count - seen) * perCommit < stepPages) return;
  let [busy, log, done] = passive.get();
  stats.checkpoints++;
  if (log > lastLog && lastLog >= 0 && count > seen) perCommit = 0.7 * perCommit + (0.3 * (log - lastLog)) / (count - seen);
  [seen, lastLog] = [count, log];
  behind = busy !== 0 || log > done;
  if (busy || log <= 0 || (log < restartPages && !idle)) return;
  if (now < retryAt) return;
  if (startOver()) [behind, lastLog, retries] = [false, -1, 0];
  // Busy: a reader still holds pages of the WAL (a long query in another process), or another
  // process writes. Neither ends because the store waits, so it did not: the next try is later.
  else retryAt = now + Math.min(retryMaxMs, pollMs * 2 ** retries++);
}

// Starts the WAL over: the store holds its next commits (WalCheckpointer.quiet) while the pages
// committed since the passive checkpoint are copied and the restart is written, so no commit of
// its lands in between and leaves the WAL to grow. The only lock worth waiting for is the store's
// own commit that began before it saw QUIET (synchronous, sub-millisecond: WRITING); anything
// busy after that is another connection, and the store's commits are released at once.
function startOver() {
  const quietFrom = performance.now();
  Atomics.store(shared, QUIET, 1);
  stats.quiets++;
  try {
    Atomics.wait(shared, WRITING, 1, quietMs);
    stats.full++;
    const [busy] = full.get();
    if (busy !== 0 || !restart()) {
      stats.busy++;
      return false;
    }
    return true;
  } finally {
    Atomics.store(shared, QUIET, 0);
    Atomics.notify(shared, QUIET);
    const held = performance.now() - quietFrom;
    stats.quietMs += held;
    stats.maxQuietMs = Math.max(stats.maxQuietMs, held);
  }
}

const timer = setInterval(() => {
  try {
    tick();
  } catch (err) {
    // SQLITE_BUSY and the like: the next tick tries again. Anything else ends the worker.
    if (!/^SQLITE_(BUSY|LOCKED)/.test(String(err && err.code))) throw err;
  }
}, pollMs);
parentPort.on("message", (msg) => {
  if (msg === "stats") return parentPort.postMessage({ stats });
  if (msg !== "close") return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

export interface CheckpointStats {
  checkpoints: number;
  restarts: number;
  /** FULL checkpoints: one per try to restart the WAL. */
  full: number;
  /** Tries to restart the WAL that found another connection in the way (a FULL checkpoint or the write busy). */
  busy: number;
  /** Times the store's commits were held for a restart, and for how long: in all, and the longest. */
  quiets: number;
  quietMs: number;
  maxQuietMs: number;
}

export class WalCheckpointer {
  /**
   * [commits the store made, 1 while the worker restarts the WAL and the store's commits wait,
   * 1 while the store's thread is inside a write transaction].
   */
  private readonly shared = new Int32Array(new SharedArrayBuffer(12));
  private readonly worker: Worker;
  private readonly exited: Promise<void>;

  constructor(path: string, opts: CheckpointerOptions) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, driver, shared: this.shared.buffer, restartPages: opts.restartPages, stepPages: Math.max(1, Math.round(opts.restartPages / STEPS_PER_RESTART)), pollMs: POLL_MS, idleMs: IDLE_MS, quietMs: QUIET_MAX_MS, retryMaxMs: RETRY_MAX_MS },
    });
    // A checkpointer must not keep a process alive that has nothing else to do.
    this.worker.unref();
    let failure: Error | undefined;
    this.worker.on("error", (err) => (failure = err));
    this.exited = new Promise((resolve) => this.worker.once("exit", () => resolve()));
    void this.exited.then(() => opts.onExit(failure));
  }

  /** The store committed: the worker checkpoints by what the store wrote, not on a blind timer. */
  committed(): void {
    Atomics.add(this.shared, COMMITS, 1);
  }

  /**
   * Runs one of the store's write transactions (synchronous): a restart that begins meanwhile
   * waits for this one to end instead of finding the store's lock busy.
   */
  writing<T>(fn: () => T): T {
    Atomics.store(this.shared, WRITING, 1);
    try {
      return fn();
    } finally {
      Atomics.store(this.shared, WRITING, 0);
      Atomics.notify(this.shared, WRITING);
    }
  }

  /**
   * Undefined, or while the worker restarts the WAL (a few ms every `restartPages` pages), a
   * promise the store's next commit waits for; never longer than QUIET_MAX_MS, so a stuck worker
   * cannot stall the store.
   */
  quiet(): Promise<void> | undefined {
    if (Atomics.load(this.shared, QUIET) === 0) return undefined;
    return new Promise((resolve) => {
      const wait = (Atomics as unknown as AtomicsWaitAsync).waitAsync(this.shared, QUIET, 1, QUIET_MAX_MS);
      if (!wait.async) return resolve();
      // The timer bounds the wait and keeps the process alive meanwhile: a pending waitAsync does not.
      const timer = setTimeout(resolve, QUIET_MAX_MS);
      void wait.value.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Tests: how many checkpoints and restarts the worker ran. */
  stats(): Promise<CheckpointStats> {
    return new Promise((resolve) => {
      const onMessage = (msg: { stats?: CheckpointStats }) => {
        if (!msg.stats) return;
        this.worker.off("message", onMessage);
        this.worker.unref();
        resolve(msg.stats);
      };
      this.worker.on("message", onMessage);
      this.worker.ref();
      this.worker.postMessage("stats");
    });
  }

  /** Closes the worker's connection first, so the store's own close is the last and removes the WAL. */
  async close(): Promise<void> {
    // Unref'd, the worker's exit is not something the event loop waits for: a CLI command closing
    // its store would see the process end mid-await, its output and exit code lost.
    this.worker.ref();
    this.worker.postMessage("close");
    await this.exited;
  }
}
