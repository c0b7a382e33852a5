interface Waiting<T, R> {
  item: T;
  resolve: (result: R) => void;
  reject: (err: unknown) => void;
}

/** Most items in one commit: a burst larger than this is written in several, one after another. */
const MAX_BATCH = 512;

/**
 * Items written together, one commit per turn of the event loop: every item added in a turn goes
 * into the next commit, and each caller's promise settles only when that commit did (so an
 * acknowledged item is as durable as if it had been written alone). Commits run one at a time, in
 * the order their items were added; while one waits (a busy lock, a round trip), the next turn's
 * items queue. A commit may answer each item (`R`, in item order): a reservation's yes or no.
 */
export class CommitBatch<T, R = void> {
  private queue: Waiting<T, R>[] = [];
  private running?: Promise<void>;
  private scheduled = false;

  constructor(private readonly commit: (items: T[]) => Promise<R[] | void>) {}

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.scheduled && this.running === undefined) {
        this.scheduled = true;
        setImmediate(() => this.start());
      }
    });
  }

  /** Nothing waiting and nothing being committed: drain() has nothing to wait for. */
  get idle(): boolean {
    return this.running === undefined && this.queue.length === 0;
  }

  /** Resolves once every item added so far is committed or refused. */
  async drain(): Promise<void> {
    while (this.running !== undefined || this.queue.length > 0) {
      if (this.running === undefined) this.start();
      await this.running;
    }
  }

  private start(): void {
    this.scheduled = false;
    if (this.running !== undefined || this.queue.length === 0) return;
    const batch = this.queue.length > MAX_BATCH ? this.queue.splice(0, MAX_BATCH) : this.queue;
    if (batch === this.queue) this.queue = [];
    let commit: Promise<R[] | void>;
    try {
      commit = this.commit(batch.map((w) => w.item));
    } catch (err) {
      commit = Promise.reject(err);
    }
    this.running = commit
      .then(
        (results) => {
          // A result that is an Error is that item's own failure: the batch's other items stand.
          for (let i = 0; i < batch.length; i++) {
            const r = results ? results[i]! : (undefined as R);
            if (r instanceof Error) batch[i]!.reject(r);
            else batch[i]!.resolve(r);
          }
        },
        (err: unknown) => {
          for (const w of batch) w.reject(err);
        },
      )
      .finally(() => {
        this.running = undefined;
        if (this.queue.length > 0 && !this.scheduled) {
          this.scheduled = true;
          setImmediate(() => this.start());
        }
      });
  }
}
