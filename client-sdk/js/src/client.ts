/**
 * The client: one logical connection to a broker over WebSocket, SSE or
 * long-poll (tried in that order), reconnecting with full-jitter backoff,
 * renewing every subscription from the positions it tracked so a reconnect
 * (or a fallback) loses nothing the broker kept and repeats nothing.
 */
import { backoffDelay, type ReconnectOptions } from './backoff.js';
import { encodeValue, type PresenceEntry, type PresenceInfo, type SubscribedInfo } from './codec.js';
import { toBase64Url } from './base64.js';
import { Emitter } from './emitter.js';
import { PatternEntry } from './entry.js';
import { isFinalClose, isRetryable, TickwireError } from './errors.js';
import { jwtExpiry, refreshDelayMs } from './jwt.js';
import { toMessage, type DecodeMode, type Message, type RawDelivery } from './message.js';
import { patternProblem, topicProblem, matches } from './topic.js';
import { joinLeaveKind, Subscription, type SubscribeOptions, type SubscriptionOwner } from './subscription.js';
import { PollTransport } from './transports/poll.js';
import { SseTransport } from './transports/sse.js';
import type { KeepaliveOptions, Transport, TransportContext, TransportHost, TransportKind, WebSocketConstructor } from './transports/transport.js';
import { WebSocketTransport } from './transports/websocket.js';
import { endpoints, type Endpoints } from './url.js';

/** Options of {@link Client}. */
export interface ClientOptions {
  /** A bearer token, or a function giving one (called on every connect and before expiry, for `REFRESH`). */
  token?: string | (() => string | Promise<string>);
  /** Transports in fallback order (default `['websocket', 'sse', 'poll']`); one forces it. */
  transports?: TransportKind[];
  /** Reconnect backoff (full jitter): initial 100 ms, max 30 s by default. */
  reconnect?: ReconnectOptions;
  /** A WebSocket class; in Node pass the `ws` package's (`import WebSocket from 'ws'`). */
  WebSocket?: new (url: string, protocols?: string | string[]) => object;
  /** A `fetch` for SSE, poll and HTTP publish (default: the global one). */
  fetch?: typeof fetch;
  /** Bound of one connection attempt, ms (default 10000). */
  connectTimeoutMs?: number;
  /** Bound of a request (acked publish, refresh), ms (default 10000); also how long a publish may wait offline. */
  requestTimeoutMs?: number;
  /** Dead-connection detection (default: probe after 30 s of silence, drop 10 s later). */
  keepalive?: KeepaliveOptions;
  /** Seconds the broker holds a poll request (default 25). */
  pollTimeoutS?: number;
  /** Publishes kept while disconnected (default 1000 messages and 1 MiB); beyond, `buffer_full`. */
  offlineBuffer?: { maxMessages?: number; maxBytes?: number };
  /**
   * This client's id (1-64 of `A-Z a-z 0-9 _ -`), sent as `client=` on every
   * connection, so a reconnect is the same presence entry. Default: 22
   * random base64url characters, one per `Client` object.
   */
  clientId?: string;
}

/** What a client id may be (protocol.md: `client=`). */
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A fresh client id: 128 random bits as 22 base64url characters. */
export function generateClientId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return toBase64Url(bytes);
}

/** Connection states. */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** Details of a state change. */
export interface StateInfo {
  /** The transport in use (`connected`), else `null`. */
  transport: TransportKind | null;
  /** Reconnect attempt number (`connecting`, `disconnected`). */
  attempt?: number;
  /** The backoff before the next attempt, ms (`disconnected`). */
  delayMs?: number;
  /** Why the connection (or the last attempt) ended (`disconnected`). */
  error?: TickwireError;
}

/** Events of a {@link Client}. */
export type ClientEvents = {
  state: (state: ConnectionState, info: StateInfo) => void;
  error: (error: TickwireError) => void;
};

/** Options of an acknowledged publish. */
export interface PublishOptions {
  /** Keep the message as the topic's last value (for `last` subscribers). */
  retain?: boolean;
}

interface Outgoing {
  topic: string;
  payload: Uint8Array;
  retain: boolean;
  settle: { resolve: (r: { seq: number }) => void; reject: (e: TickwireError) => void; timer: ReturnType<typeof setTimeout> | undefined } | null;
}

const ALL_TRANSPORTS: TransportKind[] = ['websocket', 'sse', 'poll'];
/** A connection that stayed up this long resets the backoff. */
const STABLE_MS = 10_000;
const MAX_TIMER_MS = 2_147_483_647;

/** The bytes of a payload: `Uint8Array`/`ArrayBuffer` as they are, anything else as MessagePack. */
export function toPayload(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return encodeValue(data);
}

/** A tickwire client. It starts connecting at once. */
export class Client extends Emitter<ClientEvents> implements SubscriptionOwner {
  /** Current connection state. */
  state: ConnectionState = 'connecting';
  /** This client's id (the `clientId` option, or generated): its presence entries' `client`. */
  readonly clientId: string;
  /** The transport in use while connected, else `null`. */
  transport: TransportKind | null = null;

  private readonly endpoints: Endpoints;
  private readonly options: ClientOptions;
  private readonly kinds: TransportKind[];
  private readonly entries = new Map<string, PatternEntry>();
  private conn: Transport | null = null;
  private generation = 0;
  private attempt = 0;
  private connectedAt = 0;
  private outbox: Outgoing[] = [];
  private outboxBytes = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(url: string, options: ClientOptions = {}) {
    super();
    this.endpoints = endpoints(url);
    this.options = options;
    const kinds = (options.transports ?? ALL_TRANSPORTS).filter((k, i, a) => ALL_TRANSPORTS.includes(k) && a.indexOf(k) === i);
    if (kinds.length === 0) throw new TickwireError('invalid_option', 'transports: at least one of websocket, sse, poll');
    this.kinds = kinds;
    if (options.clientId !== undefined && !CLIENT_ID.test(options.clientId)) {
      throw new TickwireError('invalid_option', 'clientId: 1-64 characters of A-Z, a-z, 0-9, _ and -');
    }
    this.clientId = options.clientId ?? generateClientId();
    queueMicrotask(() => void this.connectCycle());
  }

  // ---- connecting -------------------------------------------------------

  private setState(state: ConnectionState, info: StateInfo): void {
    this.state = state;
    this.emit('state', state, info);
  }

  private async currentToken(): Promise<string | undefined> {
    const token = this.options.token;
    return typeof token === 'function' ? await token() : token;
  }

  private context(token: string | undefined, host: TransportHost): TransportContext {
    const o = this.options;
    return {
      ...this.endpoints,
      token,
      clientId: this.clientId,
      WebSocket: o.WebSocket as WebSocketConstructor | undefined,
      fetch: o.fetch ?? ((input, init) => globalThis.fetch(input, init)),
      connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
      requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
      idleMs: o.keepalive?.idleMs ?? 30_000,
      idleTimeoutMs: o.keepalive?.timeoutMs ?? 10_000,
      pollTimeoutS: Math.min(60, Math.max(0, Math.floor(o.pollTimeoutS ?? 25))),
      host,
    };
  }

  private create(kind: TransportKind, ctx: TransportContext): Transport {
    switch (kind) {
      case 'websocket':
        return new WebSocketTransport(ctx);
      case 'sse':
        return new SseTransport(ctx);
      case 'poll':
        return new PollTransport(ctx);
    }
  }

  /** One round of attempts: every transport in order, the first that opens wins; else back off. */
  private async connectCycle(): Promise<void> {
    if (this.state === 'closed') return;
    const gen = ++this.generation;
    this.setState('connecting', { transport: null, attempt: this.attempt + 1 });
    let lastError = new TickwireError('transport', 'no transport could connect');
    let token: string | undefined;
    try {
      token = await this.currentToken();
    } catch (err) {
      if (gen !== this.generation) return;
      const error = new TickwireError('unauthorized', `the token provider failed: ${String(err)}`);
      this.emit('error', error);
      this.scheduleReconnect(error);
      return;
    }
    for (const kind of this.kinds) {
      if (gen !== this.generation) return;
      const host = this.hostFor(gen);
      const transport = this.create(kind, this.context(token, host));
      try {
        await transport.open();
      } catch (err) {
        lastError = err instanceof TickwireError ? err : new TickwireError('transport', String(err));
        if (!isRetryable(lastError.code)) this.emit('error', lastError);
        continue;
      }
      if (gen !== this.generation) {
        transport.close();
        return;
      }
      this.connected(kind, transport, token);
      host.activate();
      return;
    }
    if (gen === this.generation) this.scheduleReconnect(lastError);
  }

  private connected(kind: TransportKind, transport: Transport, token: string | undefined): void {
    this.conn = transport;
    this.transport = kind;
    this.connectedAt = Date.now();
    for (const entry of this.entries.values()) transport.subscribe(entry);
    const queued = this.outbox;
    this.outbox = [];
    this.outboxBytes = 0;
    for (const out of queued) this.send(transport, out);
    this.scheduleRefresh(token);
    this.setState('connected', { transport: kind });
  }

  private scheduleReconnect(error: TickwireError): void {
    this.attempt++;
    const delayMs = backoffDelay(this.attempt, this.options.reconnect);
    this.setState('disconnected', { transport: null, attempt: this.attempt, delayMs, error });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connectCycle();
    }, delayMs);
  }

  private lost(error: TickwireError): void {
    if (isFinalClose(error.status)) {
      // Disconnected by the server (4007) or the application (4500-4999):
      // reconnecting would undo it.
      this.emit('error', error);
      this.terminate(error);
      return;
    }
    this.conn?.close();
    this.conn = null;
    this.transport = null;
    this.generation++;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    for (const entry of this.entries.values()) entry.confirmed = false;
    if (Date.now() - this.connectedAt >= STABLE_MS) this.attempt = 0;
    if (!isRetryable(error.code)) this.emit('error', error);
    this.scheduleReconnect(error);
  }

  private scheduleRefresh(token: string | undefined): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const provider = this.options.token;
    if (typeof provider !== 'function' || token === undefined) return;
    const delay = refreshDelayMs(jwtExpiry(token), Date.now());
    if (delay === undefined) return;
    const gen = this.generation;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void (async () => {
        try {
          const fresh = await provider();
          if (gen !== this.generation || !this.conn) return;
          await this.conn.refresh(fresh);
          if (gen === this.generation) this.scheduleRefresh(fresh);
        } catch (err) {
          this.emit('error', err instanceof TickwireError ? err : new TickwireError('unauthorized', `token refresh failed: ${String(err)}`));
        }
      })();
    }, Math.min(delay, MAX_TIMER_MS));
  }

  /**
   * What the transport of generation `gen` reports to; reports of older
   * connections are ignored. Reports that arrive while the transport is
   * still opening (an SSE stream's first events) wait until `activate`, so
   * the application sees them with the client already `connected`.
   */
  private hostFor(gen: number): TransportHost & { activate(): void } {
    let active = false;
    const early: Array<() => void> = [];
    const run = (f: () => void): void => {
      if (gen !== this.generation) return;
      if (active) f();
      else early.push(f);
    };
    return {
      subscriptions: () => [...this.entries.values()],
      deliver: (raw) => run(() => this.deliver(raw)),
      presence: (kind, topic, entry) => run(() => this.presenceEvent(kind, topic, entry)),
      subscribed: (pattern, info) => run(() => this.subscribed(pattern, info)),
      refused: (pattern, error) => run(() => this.refused(pattern, error)),
      lost: (error) => run(() => {
        if (this.conn) this.lost(error);
      }),
      report: (error) => run(() => this.emit('error', error)),
      activate: () => {
        active = true;
        for (const f of early.splice(0)) {
          if (gen !== this.generation) return;
          f();
        }
      },
    };
  }

  // ---- deliveries ---------------------------------------------------------

  private deliver(raw: RawDelivery): void {
    const decoded = new Map<DecodeMode, { message: Message; error?: unknown }>();
    for (const entry of this.entries.values()) {
      if (!matches(entry.pattern, raw.topic)) continue;
      if (entry.tracker.accept(raw.topic, raw.epoch, raw.seq) === 'duplicate') continue;
      for (const sub of entry.subs) {
        let m = decoded.get(sub.decode);
        if (!m) {
          m = toMessage(raw, sub.decode);
          decoded.set(sub.decode, m);
        }
        sub.deliver(m.message, m.error);
      }
    }
  }

  /**
   * A JOIN/LEAVE: to every subscription matching its topic that asked for
   * its kind (an event with `client` is connection-level, `clients`;
   * without, user-level, `users`).
   */
  private presenceEvent(kind: 'join' | 'leave', topic: string, entry: PresenceEntry): void {
    const wanted = entry.client === undefined ? 'users' : 'clients';
    for (const e of this.entries.values()) {
      if (e.joinLeave !== wanted || !matches(e.pattern, topic)) continue;
      for (const sub of e.subs) sub.presence(kind, { topic, ...entry });
    }
  }

  private subscribed(pattern: string, info: SubscribedInfo): void {
    const entry = this.entries.get(pattern);
    if (!entry) return;
    entry.confirmed = true;
    entry.everConfirmed = true;
    if (info.missed) entry.tracker.reset(info.missed);
    const exact = patternProblem(pattern) === null && topicProblem(pattern) === null;
    if (exact && !entry.sentSince && info.epoch !== undefined && info.seq !== undefined && entry.tracker.get(pattern) === undefined) {
      entry.tracker.accept(pattern, info.epoch, info.seq);
    }
    for (const sub of entry.subs) sub.confirm(info);
  }

  private refused(pattern: string, error: TickwireError): void {
    const entry = this.entries.get(pattern);
    if (!entry) return;
    this.entries.delete(pattern);
    for (const sub of [...entry.subs]) sub.finish(error);
    this.emit('error', new TickwireError(error.code, `subscription ${pattern}: ${error.message}`, error.status));
  }

  // ---- public API ---------------------------------------------------------

  /**
   * Subscribes to `pattern` (`*` one token, `>` the rest). The returned
   * subscription gives messages through `on('message')` and/or `for await`;
   * `ready` says whether the broker accepted it. It survives reconnects and
   * resumes from the last position of every topic it saw.
   */
  subscribe(pattern: string, options: SubscribeOptions = {}): Subscription {
    const sub = new Subscription(pattern, options, this);
    if (this.state === 'closed') {
      sub.finish(new TickwireError('closed', 'the client was closed'));
      return sub;
    }
    const problem = patternProblem(pattern);
    if (problem !== null) {
      sub.finish(new TickwireError('invalid_pattern', `invalid pattern ${JSON.stringify(pattern)}: ${problem}`));
      return sub;
    }
    if (options.maxRate !== undefined && !(options.maxRate >= 1)) {
      sub.finish(new TickwireError('invalid_option', 'maxRate must be at least 1'));
      return sub;
    }
    let joinLeave;
    try {
      joinLeave = joinLeaveKind(options.joinLeave);
    } catch (err) {
      sub.finish(new TickwireError('invalid_option', (err as Error).message));
      return sub;
    }
    const existing = this.entries.get(pattern);
    if (existing) {
      const maxRate = options.maxRate === undefined ? undefined : Math.floor(options.maxRate);
      if (options.last || options.since || maxRate !== existing.maxRate || (options.resume ?? true) !== existing.resume || joinLeave !== existing.joinLeave) {
        sub.finish(new TickwireError('invalid_option', `${pattern} is already subscribed with other options; a second subscription must use the same maxRate, resume and joinLeave, and neither last nor since`));
        return sub;
      }
      const wasRaw = existing.rawPayload;
      existing.subs.add(sub);
      if (existing.confirmed) queueMicrotask(() => sub.confirm({}));
      if (existing.rawPayload !== wasRaw && this.conn?.kind !== 'websocket') this.conn?.subscribe(existing);
      return sub;
    }
    const entry = new PatternEntry(pattern, options, joinLeave);
    entry.subs.add(sub);
    this.entries.set(pattern, entry);
    this.conn?.subscribe(entry);
    return sub;
  }

  /** @internal A subscription ended: the broker subscription goes with the last one of its pattern. */
  detach(sub: Subscription): void {
    const entry = this.entries.get(sub.pattern);
    if (!entry || !entry.subs.delete(sub) || entry.subs.size > 0) return;
    this.entries.delete(sub.pattern);
    this.conn?.unsubscribe(sub.pattern);
  }

  /**
   * Publishes `data` on `topic` (MessagePack-encoded, or as is when it is a
   * `Uint8Array`/`ArrayBuffer`) and resolves with the sequence number the
   * broker gave it. While disconnected it waits in the offline buffer (up to
   * the request timeout).
   */
  publish(topic: string, data: unknown, options: PublishOptions = {}): Promise<{ seq: number }> {
    return new Promise((resolve, reject) => {
      const problem = this.checkPublish(topic);
      if (problem) {
        reject(problem);
        return;
      }
      const out: Outgoing = { topic, payload: toPayload(data), retain: options.retain ?? false, settle: null };
      const timeoutMs = this.options.requestTimeoutMs ?? 10_000;
      if (this.conn) {
        out.settle = { resolve, reject, timer: undefined };
        this.send(this.conn, out);
        return;
      }
      const timer = setTimeout(() => {
        const i = this.outbox.indexOf(out);
        if (i >= 0) {
          this.outbox.splice(i, 1);
          this.outboxBytes -= out.payload.length;
        }
        reject(new TickwireError('timeout', `not connected within ${timeoutMs} ms; not published`));
      }, timeoutMs);
      out.settle = { resolve, reject, timer };
      const full = this.enqueue(out);
      if (full) {
        clearTimeout(timer);
        reject(full);
      }
    });
  }

  /** Publishes without acknowledgement; failures are reported as `error` events. */
  publishNoAck(topic: string, data: unknown): void {
    const problem = this.checkPublish(topic);
    if (problem) {
      this.emit('error', problem);
      return;
    }
    const out: Outgoing = { topic, payload: toPayload(data), retain: false, settle: null };
    if (this.conn) {
      this.send(this.conn, out);
      return;
    }
    const full = this.enqueue(out);
    if (full) this.emit('error', full);
  }

  private checkPublish(topic: string): TickwireError | null {
    if (this.state === 'closed') return new TickwireError('closed', 'the client was closed');
    const problem = topicProblem(topic);
    return problem === null ? null : new TickwireError('invalid_topic', `invalid topic ${JSON.stringify(topic)}: ${problem}`);
  }

  /** Adds to the offline buffer, or returns the `buffer_full` error when it is full. */
  private enqueue(out: Outgoing): TickwireError | null {
    const maxMessages = this.options.offlineBuffer?.maxMessages ?? 1000;
    const maxBytes = this.options.offlineBuffer?.maxBytes ?? 1024 * 1024;
    if (this.outbox.length >= maxMessages || this.outboxBytes + out.payload.length > maxBytes) {
      return new TickwireError('buffer_full', `offline publish buffer full (${maxMessages} messages, ${maxBytes} bytes)`);
    }
    this.outbox.push(out);
    this.outboxBytes += out.payload.length;
    return null;
  }

  private send(transport: Transport, out: Outgoing): void {
    const settle = out.settle;
    if (!settle) {
      try {
        transport.publishNoAck(out.topic, out.payload);
      } catch (err) {
        this.emit('error', err instanceof TickwireError ? err : new TickwireError('transport', String(err)));
      }
      return;
    }
    clearTimeout(settle.timer);
    transport.publish(out.topic, out.payload, out.retain).then(
      (seq) => settle.resolve({ seq }),
      (err: unknown) => settle.reject(err instanceof TickwireError ? err : new TickwireError('transport', String(err))),
    );
  }

  /**
   * The presence of `topic` (protocol.md, presence): every client instance
   * subscribed to it, with counts. Needs a topic with presence and the
   * right to subscribe to it (`presence_disabled`, `forbidden`). Over SSE and
   * poll it asks `GET /v1/presence/{topic}` (the server API, which needs an
   * admin token). Waits for a connection up to `requestTimeoutMs`.
   */
  presence(topic: string): Promise<PresenceInfo> {
    return this.askPresence(topic, false);
  }

  /** Only the counts of {@link Client.presence}: `{ clients, users }`. */
  presenceStats(topic: string): Promise<{ clients: number; users: number }> {
    return this.askPresence(topic, true).then(({ clients, users }) => ({ clients, users }));
  }

  private async askPresence(topic: string, countsOnly: boolean): Promise<PresenceInfo> {
    const problem = this.checkPublish(topic);
    if (problem) throw problem;
    const conn = this.conn ?? (await this.whenConnected());
    return conn.presence(topic, countsOnly);
  }

  /** The transport once connected; rejects on close or after `requestTimeoutMs`. */
  private whenConnected(): Promise<Transport> {
    const timeoutMs = this.options.requestTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new TickwireError('timeout', `not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on('state', (state, info) => {
        if (state === 'connected' && this.conn) {
          clearTimeout(timer);
          off();
          resolve(this.conn);
        } else if (state === 'closed') {
          clearTimeout(timer);
          off();
          reject(info.error ?? new TickwireError('closed', 'the client was closed'));
        }
      });
    });
  }

  /** Closes the connection; subscriptions end, pending and buffered publishes fail with `closed`. */
  close(): void {
    this.terminate(undefined);
  }

  /**
   * Ends the client: by the application (`error` undefined: everything
   * ends with `closed`), or for good by the broker (a final close code:
   * subscriptions end with that error, state `closed` with it).
   */
  private terminate(error: TickwireError | undefined): void {
    if (this.state === 'closed') return;
    this.generation++;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.reconnectTimer = null;
    this.refreshTimer = null;
    this.conn?.close();
    this.conn = null;
    this.transport = null;
    const closed = error ?? new TickwireError('closed', 'the client was closed');
    for (const out of this.outbox) {
      if (out.settle) {
        clearTimeout(out.settle.timer);
        out.settle.reject(closed);
      }
    }
    this.outbox = [];
    this.outboxBytes = 0;
    for (const entry of this.entries.values()) for (const sub of [...entry.subs]) sub.finish(error);
    this.entries.clear();
    this.setState('closed', error ? { transport: null, error } : { transport: null });
  }
}
