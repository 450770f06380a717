/**
 * The Server-Sent Events transport: `GET /v1/sse` per group, read with
 * `fetch` streaming and parsed by {@link SseParser} (not `EventSource`, so
 * Node needs no polyfill and the client chooses the resume cursor itself on
 * every restart rather than relying on the browser's `Last-Event-ID`).
 */
import { closeError, httpError, TickwireError } from '../errors.js';
import { SseParser, type SseEvent } from '../sse.js';
import { fetchWithDeadline } from './http.js';
import { streamQuery, StreamTransport, type Group } from './streams.js';

/** SSE transport. */
export class SseTransport extends StreamTransport {
  readonly kind = 'sse' as const;

  protected async run(group: Group): Promise<void> {
    const url = `${this.ctx.httpBase}/v1/sse?${streamQuery(group.subs, this.ctx.token, [['client', this.ctx.clientId]])}`;
    const { res, text } = await fetchWithDeadline(this.ctx, url, { headers: { accept: 'text/event-stream' } }, this.ctx.connectTimeoutMs, group.controller.signal);
    if (!res.ok) throw httpError(res.status, text);
    if (!res.body) throw new TickwireError('transport', 'SSE answer without a body');
    group.started();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    const silence = this.ctx.idleMs + this.ctx.idleTimeoutMs;
    let lastRead = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - lastRead > silence) void reader.cancel(new TickwireError('timeout', `SSE stream silent for ${silence} ms`));
    }, Math.max(50, Math.floor(silence / 4)));
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (group.stopped) return;
          throw err instanceof TickwireError ? err : new TickwireError('transport', `SSE stream failed: ${String(err)}`);
        }
        if (chunk.done) {
          if (group.stopped) return;
          if (Date.now() - lastRead > silence) throw new TickwireError('timeout', `SSE stream silent for ${silence} ms`);
          throw new TickwireError('transport', 'SSE stream ended');
        }
        lastRead = Date.now();
        for (const event of parser.push(chunk.value)) this.event(event);
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  private event(event: SseEvent): void {
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      this.ctx.host.report(new TickwireError('protocol', `SSE ${event.event} event that is not JSON`));
      return;
    }
    switch (event.event) {
      case 'message':
        this.onDelivery(value);
        return;
      case 'subscribed':
        this.onSubscribed(value);
        return;
      case 'error':
        this.onError(value);
        return;
      case 'join':
      case 'leave':
        this.onPresence(event.event, value);
        return;
      case 'close': {
        const code = typeof value['code'] === 'number' ? value['code'] : 1011;
        const reason = typeof value['reason'] === 'string' ? value['reason'] : '';
        throw closeError(code, `SSE stream closed (${code} ${reason})`);
      }
      default:
        return;
    }
  }
}
