/**
 * The WebSocket transport: the full protocol of protocol.md over one
 * connection (`tickwire.v1`, one MessagePack array per binary message).
 * Requests are correlated by id; the broker's pings are answered by the
 * WebSocket implementation itself, and a read side silent for `idleMs`
 * gets an application `PING`, whose answer (or anything else) must come
 * within `idleTimeoutMs` or the connection is dropped as dead.
 */
import {
  decodeServerMessage,
  encodePing,
  encodePresence,
  encodePublish,
  encodeRefresh,
  encodeSubscribe,
  encodeUnsubscribe,
  type PresenceInfo,
  type ServerMessage,
} from '../codec.js';
import { closeError, errorCodeName, TickwireError } from '../errors.js';
import { redact } from './http.js';
import type { Transport, TransportContext, WireSubscription } from './transport.js';

/** The WebSocket subprotocol of protocol version 1. */
export const SUBPROTOCOL = 'tickwire.v1';

/** Bytes the socket may have buffered before publishes are refused with `buffer_full`. */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

const OPEN = 1;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: TickwireError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** How a close (code and reason, protocol.md section 11) reads in an error message. */
function closeText(code: number, reason: string): string {
  return `connection closed (${code}${reason ? ` ${reason}` : ''})`;
}

/** One WebSocket connection. */
export class WebSocketTransport implements Transport {
  readonly kind = 'websocket' as const;
  private ws: WebSocket | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subscribeIds = new Map<number, string>();
  private closing = false;
  private lastRead = 0;
  private pingSentAt = 0;
  private keepalive: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly ctx: TransportContext) {}

  open(): Promise<void> {
    const Ctor = this.ctx.WebSocket ?? (globalThis as { WebSocket?: TransportContext['WebSocket'] }).WebSocket;
    if (!Ctor) {
      return Promise.reject(new TickwireError('transport', 'no WebSocket implementation: in Node pass the `WebSocket` option (the ws package)'));
    }
    let url = `${this.ctx.wsUrl}${this.ctx.wsUrl.includes('?') ? '&' : '?'}client=${encodeURIComponent(this.ctx.clientId)}`;
    if (this.ctx.token) url += `&token=${encodeURIComponent(this.ctx.token)}`;
    return new Promise((resolve, reject) => {
      let opened = false;
      let ws: WebSocket;
      try {
        ws = new Ctor(url, SUBPROTOCOL);
      } catch (err) {
        reject(new TickwireError('transport', `cannot open ${redact(url)}: ${String(err)}`));
        return;
      }
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      const timer = setTimeout(() => {
        if (opened) return;
        this.closing = true;
        ws.close();
        reject(new TickwireError('timeout', `WebSocket to ${redact(url)} not open within ${this.ctx.connectTimeoutMs} ms`));
      }, this.ctx.connectTimeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        if (ws.protocol !== '' && ws.protocol !== SUBPROTOCOL) {
          this.closing = true;
          ws.close(1002);
          reject(new TickwireError('protocol', `broker chose subprotocol ${ws.protocol}, not ${SUBPROTOCOL}`));
          return;
        }
        opened = true;
        this.lastRead = Date.now();
        this.startKeepalive();
        resolve();
      };
      ws.onerror = () => undefined;
      ws.onclose = (ev: CloseEvent) => {
        clearTimeout(timer);
        if (!opened) {
          if (!this.closing) reject(new TickwireError('transport', `WebSocket to ${redact(url)} closed before it opened (${ev.code})`, ev.code));
          return;
        }
        this.ended(closeError(ev.code, closeText(ev.code, ev.reason)));
      };
      ws.onmessage = (ev: MessageEvent) => this.onData(ev.data);
    });
  }

  private startKeepalive(): void {
    const every = Math.max(50, Math.floor(Math.min(this.ctx.idleMs, this.ctx.idleTimeoutMs) / 2));
    this.keepalive = setInterval(() => {
      const now = Date.now();
      if (this.pingSentAt > this.lastRead) {
        if (now - this.pingSentAt > this.ctx.idleTimeoutMs) {
          this.drop(new TickwireError('timeout', `no answer from the broker within ${this.ctx.idleTimeoutMs} ms of a PING`));
        }
        return;
      }
      if (now - this.lastRead > this.ctx.idleMs) {
        this.pingSentAt = now;
        this.request((id) => encodePing(id), () => undefined);
      }
    }, every);
  }

  /** Drops the connection from the client side and reports the loss. */
  private drop(error: TickwireError): void {
    const ws = this.ws;
    this.closing = true;
    ws?.close(4000, 'client keepalive timeout');
    this.ended(error);
  }

  private ended(error: TickwireError): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = null;
    const wasClosing = this.closing;
    this.closing = true;
    this.rejectAll(error.code === 'closed' || error.code === 'disconnected' ? error : new TickwireError('transport', `${error.message}: the outcome of the request is unknown`, error.status));
    if (!wasClosing || error.code === 'timeout') this.ctx.host.lost(error);
  }

  private rejectAll(error: TickwireError): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
  }

  private onData(data: unknown): void {
    this.lastRead = Date.now();
    if (!(data instanceof ArrayBuffer)) {
      this.ctx.host.report(new TickwireError('protocol', 'the broker sent a text message'));
      return;
    }
    let msg: ServerMessage;
    try {
      msg = decodeServerMessage(new Uint8Array(data));
    } catch (err) {
      this.ctx.host.report(new TickwireError('protocol', `undecodable broker message: ${String(err)}`));
      return;
    }
    this.dispatch(msg);
  }

  private dispatch(msg: ServerMessage): void {
    switch (msg.type) {
      case 'message':
        this.ctx.host.deliver({ topic: msg.topic, epoch: msg.epoch, seq: msg.seq, time: msg.time, payload: msg.payload });
        return;
      case 'subscribed': {
        const pattern = this.subscribeIds.get(msg.id);
        if (pattern !== undefined) {
          this.subscribeIds.delete(msg.id);
          this.ctx.host.subscribed(pattern, msg.info);
        }
        return;
      }
      case 'published':
        this.settle(msg.id, msg.seq);
        return;
      case 'presence':
        this.settle(msg.id, msg.info);
        return;
      case 'join':
      case 'leave':
        this.ctx.host.presence(msg.type, msg.topic, msg.entry);
        return;
      case 'unsubscribed':
      case 'pong':
      case 'refreshed':
        this.settle(msg.id, 0);
        return;
      case 'error': {
        const error = new TickwireError(errorCodeName(msg.code), msg.message);
        if (msg.id === null) {
          this.ctx.host.report(error);
          return;
        }
        const pattern = this.subscribeIds.get(msg.id);
        if (pattern !== undefined) {
          this.subscribeIds.delete(msg.id);
          if (error.code === 'already_subscribed') this.ctx.host.subscribed(pattern, {});
          else this.ctx.host.refused(pattern, error);
          return;
        }
        const p = this.pending.get(msg.id);
        if (p) {
          this.pending.delete(msg.id);
          clearTimeout(p.timer);
          p.reject(error);
        }
        return;
      }
      case 'unknown':
        return;
    }
  }

  private settle(id: number, value: unknown): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(value);
  }

  private send(bytes: Uint8Array): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || this.closing) throw new TickwireError('transport', 'not connected');
    ws.send(bytes);
  }

  /** Sends the request `encode(id)` and settles through `onReply`/`onError` within the request timeout. */
  private request(encode: (id: number) => Uint8Array, onReply: (value: unknown) => void, onError?: (e: TickwireError) => void): void {
    const id = this.nextId++;
    const timer = setTimeout(() => {
      this.pending.delete(id);
      onError?.(new TickwireError('timeout', `no reply within ${this.ctx.requestTimeoutMs} ms`));
    }, this.ctx.requestTimeoutMs);
    this.pending.set(id, { resolve: onReply, reject: (e) => onError?.(e), timer });
    try {
      this.send(encode(id));
    } catch (err) {
      clearTimeout(timer);
      this.pending.delete(id);
      onError?.(err as TickwireError);
    }
  }

  subscribe(sub: WireSubscription): void {
    const id = this.nextId++;
    this.subscribeIds.set(id, sub.pattern);
    const since = sub.since();
    const options = {
      ...(since ? { since } : {}),
      last: sub.last,
      ...(sub.maxRate !== undefined ? { maxRate: sub.maxRate } : {}),
      ...(sub.joinLeave !== undefined ? { joinLeave: sub.joinLeave } : {}),
    };
    try {
      this.send(encodeSubscribe(id, sub.pattern, options));
    } catch {
      this.subscribeIds.delete(id);
    }
  }

  unsubscribe(pattern: string): void {
    this.request((id) => encodeUnsubscribe(id, pattern), () => undefined, () => undefined);
  }

  publish(topic: string, payload: Uint8Array, retain: boolean): Promise<number> {
    if ((this.ws?.bufferedAmount ?? 0) > MAX_BUFFERED_BYTES) {
      return Promise.reject(new TickwireError('buffer_full', `over ${MAX_BUFFERED_BYTES} bytes wait in the socket's send buffer`));
    }
    return new Promise((resolve, reject) => this.request((id) => encodePublish(id, topic, payload, retain), (seq) => resolve(seq as number), reject));
  }

  presence(topic: string, countsOnly: boolean): Promise<PresenceInfo> {
    return new Promise((resolve, reject) => this.request((id) => encodePresence(id, topic, countsOnly), (info) => resolve(info as PresenceInfo), reject));
  }

  publishNoAck(topic: string, payload: Uint8Array): void {
    if ((this.ws?.bufferedAmount ?? 0) > MAX_BUFFERED_BYTES) {
      this.ctx.host.report(new TickwireError('buffer_full', `publish to ${topic} dropped: the socket's send buffer is full`));
      return;
    }
    this.send(encodePublish(null, topic, payload, false));
  }

  refresh(token: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.request(
        (id) => encodeRefresh(id, token),
        () => resolve(),
        reject,
      ),
    );
  }

  close(): void {
    this.closing = true;
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = null;
    this.rejectAll(new TickwireError('closed', 'the client was closed'));
    this.ws?.close(1000);
  }
}
