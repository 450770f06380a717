/**
 * What the client asks of a transport (WebSocket, SSE, long-poll) and what
 * a transport reports back. The client owns subscriptions, positions and
 * reconnects; a transport only carries them over one connection (or one set
 * of HTTP streams) and reports when it is lost.
 */
import type { JoinLeaveKind, Position, PresenceEntry, PresenceInfo, SubscribedInfo } from '../codec.js';
import type { TickwireError } from '../errors.js';
import type { RawDelivery } from '../message.js';

/** The transports, in the default fallback order. */
export type TransportKind = 'websocket' | 'sse' | 'poll';

/** A broker subscription (one per pattern) as a transport must establish it. */
export interface WireSubscription {
  readonly pattern: string;
  readonly last: boolean;
  readonly maxRate: number | undefined;
  /** The join/leave events asked for, if any. */
  readonly joinLeave: JoinLeaveKind | undefined;
  /** Whether the broker confirmed it on some earlier connection or stream. */
  readonly everConfirmed: boolean;
  /** Whether some local subscription needs the exact payload bytes (not the broker's JSON rendering). */
  readonly rawPayload: boolean;
  /** The `since` to subscribe with now, or `undefined` for a plain subscribe. */
  since(): Record<string, Position> | undefined;
}

/** The client, as its transport sees it. */
export interface TransportHost {
  /** The broker subscriptions to hold now. */
  subscriptions(): WireSubscription[];
  /** A delivery arrived. */
  deliver(raw: RawDelivery): void;
  /** A JOIN or LEAVE event of `topic` arrived (in order with the deliveries). */
  presence(kind: 'join' | 'leave', topic: string, entry: PresenceEntry): void;
  /** The broker confirmed the subscription of `pattern`. */
  subscribed(pattern: string, info: SubscribedInfo): void;
  /** The broker refused the subscription of `pattern`. */
  refused(pattern: string, error: TickwireError): void;
  /** The connection is gone after it was established; the client reconnects. */
  lost(error: TickwireError): void;
  /** A non-fatal problem to report as the client's `error` event. */
  report(error: TickwireError): void;
}

/** A `WebSocket` constructor: the browser's, or the `ws` package's in Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** Keepalive settings: how long the read side may be silent before a probe, and how long the probe may take. */
export interface KeepaliveOptions {
  /** Silence before the client probes (WebSocket `PING`), ms; default 30000. */
  idleMs?: number;
  /** Further silence after which the connection is dropped, ms; default 10000. */
  timeoutMs?: number;
}

/** Everything a transport needs to connect. */
export interface TransportContext {
  wsUrl: string;
  httpBase: string;
  token: string | undefined;
  /** The client id, sent as `client=` on every connection and stream. */
  clientId: string;
  WebSocket: WebSocketConstructor | undefined;
  fetch: typeof fetch;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  idleMs: number;
  idleTimeoutMs: number;
  pollTimeoutS: number;
  host: TransportHost;
}

/** One connection over one transport kind. */
export interface Transport {
  readonly kind: TransportKind;
  /** Connects; resolves once established (the client then subscribes), rejects when it could not. */
  open(): Promise<void>;
  /** Establishes a broker subscription (the client added or renews it). */
  subscribe(sub: WireSubscription): void;
  /** Ends the broker subscription of `pattern`. */
  unsubscribe(pattern: string): void;
  /** Acknowledged publish; resolves with the seq. */
  publish(topic: string, payload: Uint8Array, retain: boolean): Promise<number>;
  /** Fire-and-forget publish (failures are reported, not thrown). */
  publishNoAck(topic: string, payload: Uint8Array): void;
  /** The presence of `topic` (only counts with `countsOnly`). */
  presence(topic: string, countsOnly: boolean): Promise<PresenceInfo>;
  /** Replaces the token of the open connection. */
  refresh(token: string): Promise<void>;
  /** Closes without reporting a loss. */
  close(): void;
}
