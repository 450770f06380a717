/** HTTP pieces shared by the SSE and long-poll transports: publish, errors, URLs, deadlines. */
import { httpError, TickwireError } from '../errors.js';
import type { TransportContext } from './transport.js';

/**
 * `fetch` bounded by `deadlineMs` (up to the response head, or with
 * `readBody` up to the end of the body, returned as text) and by `signal`;
 * network failures become `transport` errors.
 */
export async function fetchWithDeadline(
  ctx: TransportContext,
  url: string,
  init: RequestInit,
  deadlineMs: number,
  signal?: AbortSignal,
  readBody = false,
): Promise<{ res: Response; text: string }> {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort();
  signal?.addEventListener('abort', onAbort);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, deadlineMs);
  try {
    const res = await ctx.fetch(url, { ...init, signal: controller.signal });
    const text = readBody || !res.ok ? await res.text() : '';
    return { res, text };
  } catch (err) {
    if (timedOut) throw new TickwireError('timeout', `no answer from ${redact(url)} within ${deadlineMs} ms`);
    throw new TickwireError('transport', `request to ${redact(url)} failed: ${String(err)}`);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** `url` with any `token` query value hidden, for error messages. */
export function redact(url: string): string {
  return url.replace(/([?&]token=)[^&]*/g, '$1…');
}

/** `POST /v1/publish/{topic}` with the payload as body; resolves with the seq. */
export async function httpPublish(ctx: TransportContext, topic: string, payload: Uint8Array, retain: boolean): Promise<number> {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
  if (ctx.token) headers['authorization'] = `Bearer ${ctx.token}`;
  const url = `${ctx.httpBase}/v1/publish/${topic}${retain ? '?retain=true' : ''}`;
  const { res, text } = await fetchWithDeadline(ctx, url, { method: 'POST', headers, body: payload as Uint8Array<ArrayBuffer> }, ctx.requestTimeoutMs, undefined, true);
  if (!res.ok) throw httpError(res.status, text);
  try {
    const seq = (JSON.parse(text) as { seq?: unknown }).seq;
    if (typeof seq === 'number') return seq;
  } catch {
    // fall through
  }
  throw new TickwireError('protocol', `unexpected publish answer: ${text.slice(0, 200)}`);
}
