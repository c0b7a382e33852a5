/**
 * What a model call reads of its cancellation. An AbortSignal is one; the gateway passes a
 * `Cancel` for a non-streamed call, which costs a plain object where an AbortController costs an
 * EventTarget and its listener bookkeeping (a few per cent of a whole served request).
 */
export interface CallSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  throwIfAborted(): void;
  /** A listener runs at most once (`once` is how it always behaves here). */
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** An AbortController's part a call uses: `abort(reason)` runs the listeners once, in order. */
export class Cancel implements CallSignal {
  aborted = false;
  reason: unknown = undefined;
  /** Usually one (the upstream call's); a list only when a second is added. */
  private listeners: (() => void) | (() => void)[] | undefined = undefined;
  private controller: AbortController | undefined = undefined;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const l = this.listeners;
    this.listeners = undefined;
    if (typeof l === "function") l();
    else if (l) for (const f of l) f();
    this.controller?.abort(reason);
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  addEventListener(_type: "abort", listener: () => void): void {
    if (this.aborted) return;
    const l = this.listeners;
    this.listeners = l === undefined ? listener : typeof l === "function" ? [l, listener] : [...l, listener];
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const l = this.listeners;
    if (l === listener) this.listeners = undefined;
    else if (typeof l === "object") this.listeners = l.filter((f) => f !== listener);
  }

  /** A real AbortSignal that follows this one, for an API that takes only that (timers, fetch). */
  toAbortSignal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}

export function abortSignalOf(signal: CallSignal): AbortSignal {
  return signal instanceof Cancel ? signal.toAbortSignal() : (signal as AbortSignal);
}
