interface Waiting<T> {
  item: T;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Items written together, one commit per turn of the event loop: every item added in a turn goes
 * into the next commit, and each caller's promise settles only when that commit did (so an
 * acknowledged item is as durable as if it had been written alone). Commits run one at a time, in
 * the order their items were added; while one waits (a busy lock), the next turn's items queue.
 */
export class CommitBatch<T> {
  private queue: Waiting<T>[] = [];
  private running?: Promise<void>;
  private scheduled = false;

  constructor(private readonly commit: (items: T[]) => Promise<void>) {}

  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
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
    const batch = this.queue;
    this.queue = [];
    this.running = this.commit(batch.map((w) => w.item)).then(
      () => {
        for (const w of batch) w.resolve();
      },
      (err: unknown) => {
        for (const w of batch) w.reject(err);
      },
    ).finally(() => {
      this.running = undefined;
      if (this.queue.length > 0 && !this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.start());
      }
    });
  }
}
