import type { Writable } from "node:stream";

/** Past this many buffered characters a batch is written at once rather than at the end of the turn. */
const MAX_BATCH_CHARS = 64 * 1024;

const unflushed = new Set<LineBatch>();
// process.stdout to a file or a pipe is written synchronously on Linux, so lines still buffered
// when the process exits (serve's drain ends in process.exit) are not lost.
process.once("exit", () => {
  for (const batch of unflushed) batch.flush();
});

/**
 * Lines for one stream, written in one `write` per turn of the event loop instead of one per line.
 * Under load many requests finish in the same turn, and each write to stdout is a syscall (a
 * blocking one for files and pipes); at rest a line still leaves within the same turn, so nobody
 * reading the stream sees it later than before.
 */
export class LineBatch {
  private buffered = "";
  private scheduled = false;

  constructor(private readonly out: Writable) {}

  push(text: string): void {
    this.buffered += text;
    if (this.buffered.length >= MAX_BATCH_CHARS) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      unflushed.add(this);
      setImmediate(this.flush);
    }
  }

  readonly flush = (): void => {
    this.scheduled = false;
    unflushed.delete(this);
    if (!this.buffered) return;
    const text = this.buffered;
    this.buffered = "";
    this.out.write(text);
  };
}
