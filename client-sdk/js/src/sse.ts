/**
 * An incremental parser of the `text/event-stream` format (the WHATWG HTML
 * "server-sent events" rules): feed it decoded text chunks as they arrive,
 * get whole events back. Used over `fetch` streaming, in Node and browsers
 * alike, instead of `EventSource` (which cannot set headers or choose the
 * resume cursor).
 */

/** One dispatched event. */
export interface SseEvent {
  /** `event:` field, `message` when absent. */
  event: string;
  /** `data:` lines joined with `\n`. */
  data: string;
  /** The last event id seen so far on the stream (`id:` field), `''` if none. */
  id: string;
}

/** Most characters of one event (its lines together) before the stream is refused. */
export const MAX_EVENT_CHARS = 4 * 1024 * 1024;

/** Stateful parser: `push(text)` returns the events completed by that text. */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private dataChars = 0;
  private event = '';
  private lastId = '';
  private sawCr = false;
  /** The `retry:` value last announced by the server, in ms. */
  retry: number | undefined;

  /** Parses `chunk`; throws when one event exceeds {@link MAX_EVENT_CHARS}. */
  push(chunk: string): SseEvent[] {
    const out: SseEvent[] = [];
    let text = chunk;
    if (this.sawCr && text.startsWith('\n')) text = text.slice(1);
    this.sawCr = false;
    this.buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf('\r', start);
      const lf = this.buffer.indexOf('\n', start);
      let end: number;
      if (cr === -1 && lf === -1) break;
      if (cr === -1) end = lf;
      else if (lf === -1) end = cr;
      else end = Math.min(cr, lf);
      const line = this.buffer.slice(start, end);
      let next = end + 1;
      if (this.buffer[end] === '\r') {
        if (end + 1 === this.buffer.length) this.sawCr = true;
        else if (this.buffer[end + 1] === '\n') next = end + 2;
      }
      start = next;
      const event = this.line(line);
      if (event) out.push(event);
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length + this.dataChars > MAX_EVENT_CHARS) throw new RangeError('server-sent event too large');
    return out;
  }

  private line(line: string): SseEvent | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return null;
      }
      const event = { event: this.event || 'message', data: this.data.join('\n'), id: this.lastId };
      this.data = [];
      this.dataChars = 0;
      this.event = '';
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        this.dataChars += value.length + 1;
        if (this.dataChars > MAX_EVENT_CHARS) throw new RangeError('server-sent event too large');
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return null;
  }
}
