/**
 * The SSE/long-poll `cursor` (transports contract, section 1): base64url
 * without padding of the MessagePack map `{topic: [epoch, seq]}`, exactly the
 * value of the SUBSCRIBE `since` option. The client builds it from the
 * positions it tracks, so it can change subscriptions or fall back from
 * WebSocket without losing its place.
 */
import { Decoder } from '@msgpack/msgpack';
import { toBase64Url, fromBase64 } from './base64.js';
import { encodeValue, epochValue, type Position } from './codec.js';

/** Most topics the broker takes in one cursor; the client keeps the most recently delivered ones. */
export const MAX_CURSOR_TOPICS = 1024;

/**
 * Most characters of a cursor this client sends: half the broker's 64 KiB
 * bound, so that the whole request line (subs, token) stays within the
 * broker's 64 KiB request head.
 */
export const MAX_CURSOR_CHARS = 32 * 1024;

/**
 * The cursor of `positions` (insertion order = delivery order). Within the
 * bounds: the most recently delivered `MAX_CURSOR_TOPICS` topics,
 * fewer when their text would exceed `MAX_CURSOR_CHARS` (topics left out
 * are replayed from all the broker keeps, as new ones).
 */
export function encodeCursor(positions: Record<string, Position>): string {
  let entries = Object.entries(positions).slice(-MAX_CURSOR_TOPICS);
  for (;;) {
    const map: Record<string, [number | bigint, number]> = {};
    for (const [topic, [epoch, seq]] of entries) map[topic] = [epochValue(epoch), seq];
    const cursor = toBase64Url(encodeValue(map));
    if (cursor.length <= MAX_CURSOR_CHARS) return cursor;
    entries = entries.slice(Math.ceil(entries.length / 8));
  }
}

const decoder = new Decoder({ useBigInt64: true });

/** The positions in a cursor (for tests and diagnostics; applications treat cursors as opaque). */
export function decodeCursor(cursor: string): Record<string, Position> {
  const map = decoder.decode(fromBase64(cursor));
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new TypeError('a cursor is a map');
  const out: Record<string, Position> = {};
  for (const [topic, pos] of Object.entries(map as Record<string, unknown>)) {
    if (!Array.isArray(pos) || pos.length !== 2) throw new TypeError('a cursor position is [epoch, seq]');
    out[topic] = [String(pos[0]), Number(pos[1])];
  }
  return out;
}
