import { createParser } from "eventsource-parser";
import type { SseEvent } from "../formats/format.js";

/** The one SSE parser: bytes from any provider in, events out. */
export async function* parseSse(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseEvent> {
  const queue: SseEvent[] = [];
  const parser = createParser({
    onEvent: (e) => queue.push(e.event ? { event: e.event, data: e.data } : { data: e.data }),
  });
  const decoder = new TextDecoder();
  for await (const chunk of body) {
    parser.feed(typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true }));
    while (queue.length) yield queue.shift()!;
  }
  parser.feed(decoder.decode());
  while (queue.length) yield queue.shift()!;
}

export function formatSse(e: SseEvent): string {
  // A data payload with newlines must be split across data: lines to stay one event.
  const data = e.data.includes("\n") ? e.data.split("\n").join("\ndata: ") : e.data;
  return e.event ? `event: ${e.event}\ndata: ${data}\n\n` : `data: ${data}\n\n`;
}
