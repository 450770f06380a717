/**
 * The MessagePack wire format of protocol.md sections 4-6: client requests
 * encoded, broker messages decoded. Epochs are u64 and do not fit a
 * JavaScript number, so they are decoded as BigInt and exposed as decimal
 * strings; seq and time (µs since 1970, far below 2^53) are numbers.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';

/** A per-topic position: `[epoch as a decimal string, seq]`. */
export type Position = [string, number];

/** Which join/leave events a subscription asks for: connection-level (`clients`) or user-level (`users`). */
export type JoinLeaveKind = 'clients' | 'users';

/** Options of a SUBSCRIBE (protocol.md section 5.1), as sent. */
export interface WireSubscribeOptions {
  since?: Record<string, Position>;
  last?: boolean;
  maxRate?: number;
  joinLeave?: JoinLeaveKind;
}

/**
 * One presence entry (a client instance on a topic), or the subject of a
 * join/leave event. `client` is absent in user-level events; `user` for
 * anonymous clients; `info` when the token gave none.
 */
export interface PresenceEntry {
  /** The client id (connection-level entries and events). */
  client?: string;
  /** The token's `sub`. */
  user?: string;
  /** The client info from the token (`tw.info`), decoded. */
  info?: unknown;
}

/** A topic's presence: counts, and the entries unless only counts were asked for. */
export interface PresenceInfo {
  /** Entries (client instances) present. */
  clients: number;
  /** Distinct users among them. */
  users: number;
  /** The entries; absent for `presenceStats`. */
  entries?: PresenceEntry[];
}

/** A decoded broker message (only the fields this client uses). */
export type ServerMessage =
  | { type: 'subscribed'; id: number; info: SubscribedInfo }
  | { type: 'unsubscribed'; id: number }
  | { type: 'published'; id: number; seq: number }
  | { type: 'pong'; id: number }
  | { type: 'error'; id: number | null; code: number; message: string }
  | { type: 'refreshed'; id: number; exp: number | undefined }
  | { type: 'message'; topic: string; epoch: string; seq: number; time: number; payload: Uint8Array }
  | { type: 'presence'; id: number; info: PresenceInfo }
  | { type: 'join' | 'leave'; topic: string; entry: PresenceEntry }
  | { type: 'unknown' };

/** The `info` map of SUBSCRIBED (and the `subscribed` event of SSE/poll). */
export interface SubscribedInfo {
  /** The topic's epoch (exact-topic subscriptions). */
  epoch?: string;
  /** The topic's latest seq (exact-topic subscriptions). */
  seq?: number;
  /** With `since`: whether every position was resumed. */
  recovered?: boolean;
  /** Positions that could not be resumed: each topic's current position. */
  missed?: Record<string, Position>;
  /** This client's id, when the subscription is an exact topic with presence. */
  client?: string;
}

const encoder = new Encoder({ useBigInt64: true });
const decoder = new Decoder({ useBigInt64: true });

/** An epoch string as the shortest MessagePack integer (numbers below 2^32, a BigInt above). */
export function epochValue(epoch: string): number | bigint {
  const big = BigInt(epoch);
  return big < 0x1_0000_0000n ? Number(big) : big;
}

/** The value of MessagePack bytes (64-bit integers as BigInt). */
export function decodeValue(bytes: Uint8Array): unknown {
  return decoder.decode(bytes);
}

/** MessagePack bytes of `value`, with BigInts as uint64. */
export function encodeValue(value: unknown): Uint8Array {
  return encoder.encode(value);
}

function sinceValue(since: Record<string, Position>): Record<string, [number | bigint, number]> {
  const out: Record<string, [number | bigint, number]> = {};
  for (const [topic, [epoch, seq]] of Object.entries(since)) out[topic] = [epochValue(epoch), seq];
  return out;
}

/** `[1, id, pattern, options]` */
export function encodeSubscribe(id: number, pattern: string, options: WireSubscribeOptions): Uint8Array {
  const map: Record<string, unknown> = {};
  if (options.since) map['since'] = sinceValue(options.since);
  if (options.last) map['last'] = true;
  if (options.maxRate !== undefined) map['max_rate'] = options.maxRate;
  if (options.joinLeave !== undefined) map['join_leave'] = options.joinLeave;
  return encoder.encode([1, id, pattern, map]);
}

/** `[7, id, topic]`, or `[7, id, topic, {counts: true}]` for counts only. */
export function encodePresence(id: number, topic: string, countsOnly: boolean): Uint8Array {
  return encoder.encode(countsOnly ? [7, id, topic, { counts: true }] : [7, id, topic]);
}

/** `[2, id, pattern]` */
export function encodeUnsubscribe(id: number, pattern: string): Uint8Array {
  return encoder.encode([2, id, pattern]);
}

/** `[3, id or nil, topic, payload]`, plus `{retain: true}` when asked. */
export function encodePublish(id: number | null, topic: string, payload: Uint8Array, retain: boolean): Uint8Array {
  return encoder.encode(retain ? [3, id, topic, payload, { retain: true }] : [3, id, topic, payload]);
}

/** `[4, id]` */
export function encodePing(id: number): Uint8Array {
  return encoder.encode([4, id]);
}

/** `[5, id, token]` */
export function encodeRefresh(id: number, token: string): Uint8Array {
  return encoder.encode([5, id, token]);
}

function uint(v: unknown): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'bigint' && v >= 0n) return Number(v);
  throw new TypeError('expected an unsigned integer');
}

function epochString(v: unknown): string {
  if (typeof v === 'bigint' && v >= 0n) return v.toString();
  return String(uint(v));
}

function str(v: unknown): string {
  if (typeof v !== 'string') throw new TypeError('expected a string');
  return v;
}

function positions(v: unknown): Record<string, Position> {
  const out: Record<string, Position> = {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError('expected a map');
  for (const [topic, pos] of Object.entries(v as Record<string, unknown>)) {
    if (!Array.isArray(pos) || pos.length !== 2) throw new TypeError('expected [epoch, seq]');
    out[topic] = [epochString(pos[0]), uint(pos[1])];
  }
  return out;
}

function subscribedInfo(v: unknown): SubscribedInfo {
  const info: SubscribedInfo = {};
  if (typeof v !== 'object' || v === null) return info;
  const map = v as Record<string, unknown>;
  if (map['epoch'] !== undefined) info.epoch = epochString(map['epoch']);
  if (map['seq'] !== undefined) info.seq = uint(map['seq']);
  if (typeof map['recovered'] === 'boolean') info.recovered = map['recovered'];
  if (map['missed'] !== undefined) info.missed = positions(map['missed']);
  if (typeof map['client'] === 'string') info.client = map['client'];
  return info;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** An entry map (`client`, `user`, `info`; protocol.md, presence); throws when it is not one. */
export function presenceEntry(v: unknown): PresenceEntry {
  if (!isMap(v)) throw new TypeError('a presence entry is a map');
  const entry: PresenceEntry = {};
  if (v['client'] !== undefined) entry.client = str(v['client']);
  if (v['user'] !== undefined) entry.user = str(v['user']);
  if (v['info'] !== undefined) entry.info = v['info'];
  return entry;
}

/** The info map of PRESENCE_INFO; throws when it is not one. */
export function presenceInfo(v: unknown): PresenceInfo {
  if (!isMap(v)) throw new TypeError('PRESENCE_INFO info is a map');
  const info: PresenceInfo = { clients: uint(v['clients']), users: uint(v['users']) };
  if (v['entries'] !== undefined) {
    if (!Array.isArray(v['entries'])) throw new TypeError('presence entries are an array');
    info.entries = v['entries'].map(presenceEntry);
  }
  return info;
}

/**
 * Decodes one broker message. Unknown message types decode as
 * `{type: 'unknown'}` (to be ignored, protocol.md section 17); a message
 * that breaks the format throws.
 */
export function decodeServerMessage(bytes: Uint8Array): ServerMessage {
  const msg = decoder.decode(bytes);
  if (!Array.isArray(msg) || msg.length === 0) throw new TypeError('a broker message is a non-empty array');
  const type = uint(msg[0]);
  switch (type) {
    case 11:
      return { type: 'subscribed', id: uint(msg[1]), info: subscribedInfo(msg[2]) };
    case 12:
      return { type: 'unsubscribed', id: uint(msg[1]) };
    case 13:
      return { type: 'published', id: uint(msg[1]), seq: uint(msg[2]) };
    case 14:
      return { type: 'pong', id: uint(msg[1]) };
    case 15:
      return { type: 'error', id: msg[1] === null ? null : uint(msg[1]), code: uint(msg[2]), message: str(msg[3]) };
    case 16: {
      const payload = msg[5];
      if (!(payload instanceof Uint8Array)) throw new TypeError('a MESSAGE payload is bin');
      return { type: 'message', topic: str(msg[1]), epoch: epochString(msg[2]), seq: uint(msg[3]), time: uint(msg[4]), payload };
    }
    case 17: {
      const info = msg[2] as Record<string, unknown> | null;
      return { type: 'refreshed', id: uint(msg[1]), exp: info && info['exp'] !== undefined ? uint(info['exp']) : undefined };
    }
    case 18:
      return { type: 'presence', id: uint(msg[1]), info: presenceInfo(msg[2]) };
    case 19:
      return { type: 'join', topic: str(msg[1]), entry: presenceEntry(msg[2]) };
    case 20:
      return { type: 'leave', topic: str(msg[1]), entry: presenceEntry(msg[2]) };
    default:
      return { type: 'unknown' };
  }
}
