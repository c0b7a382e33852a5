import type { Writable } from "node:stream";

/** Past this many buffered characters a batch is written at once rather than at the end of the turn. */
const MAX_BATCH_CHARS = 64 * 1024;

const unflushed = new Set<TurnBatch>();
// process.stdout to a file or a pipe is written synchronously on Linux, so what is still batched
// when the process exits (serve's drain ends in process.exit) is not lost.
process.once("exit", () => {
  for (const batch of unflushed) batch.flush();
});

/**
 * Work gathered during one turn of the event loop and done once, at its end (setImmediate): under
 * load many requests finish in the same turn. The answers of that turn are written before it, so
 * nobody waits for the batch; at rest it is still done within the same turn. A batch still holding
 * something when the process exits is flushed then.
 */
export abstract class TurnBatch {
  private scheduled = false;

  /** Flushes at the end of this turn. */
  protected schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    unflushed.add(this);
    setImmediate(this.flush);
  }

  /** Does the batched work now (the scheduled flush then finds nothing). */
  readonly flush = (): void => {
    if (this.scheduled) {
      this.scheduled = false;
      unflushed.delete(this);
    }
    this.drain();
  };

  protected abstract drain(): void;
}

/**
 * Lines for one stream, written in one `write` per turn instead of one per line: each write to
 * stdout is a syscall (a blocking one for files and pipes).
 */
export class LineBatch extends TurnBatch {
  private buffered = "";

  constructor(private readonly out: Writable) {
    super();
  }

  push(text: string): void {
    this.buffered += text;
    if (this.buffered.length >= MAX_BATCH_CHARS) this.flush();
    else this.schedule();
  }

  protected drain(): void {
    if (!this.buffered) return;
    const text = this.buffered;
    this.buffered = "";
    this.out.write(text);
  }
}
