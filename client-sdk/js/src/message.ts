/**
 * Deliveries as the application sees them, built from a WebSocket `MESSAGE`
 * or from the delivery JSON of SSE and long-poll, with the payload decoded
 * the way the subscription asked (`decode`).
 */
import { decode as msgpackDecode } from '@msgpack/msgpack';
import { fromBase64 } from './base64.js';
import { encodeValue } from './codec.js';

/** How a subscription decodes payloads into `data`. */
export type DecodeMode = 'msgpack' | 'json' | 'raw';

/** One delivered message. */
export interface Message<T = unknown> {
  /** The topic it was published on. */
  topic: string;
  /** The topic's epoch (u64 as a decimal string). */
  epoch: string;
  /** Its sequence number on the topic within the epoch. */
  seq: number;
  /** Publish time, µs since 1970 by the broker's clock (display only). */
  time: number;
  /** The payload decoded per `decode` (`undefined` if it did not decode). */
  data: T;
  /** The payload bytes. */
  payload: Uint8Array;
}

/** A delivery before decoding: where it came from and what the transport already decoded. */
export interface RawDelivery {
  topic: string;
  epoch: string;
  seq: number;
  time: number;
  /** The exact payload bytes, when the transport has them. */
  payload?: Uint8Array;
  /** The payload as JSON, when an SSE/poll broker rendered it (`payload=auto`). */
  json?: { value: unknown };
}

/** `data` of a delivery per `mode`; throws when the payload does not decode that way. */
export function decodePayload(mode: DecodeMode, payload: Uint8Array): unknown {
  switch (mode) {
    case 'raw':
      return payload;
    case 'json':
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
    case 'msgpack':
      return msgpackDecode(payload);
  }
}

/**
 * The message a subscription with `mode` gets from `raw`. When the broker
 * already rendered the payload as JSON (only for msgpack subscriptions), its
 * value is used, and `payload` is its MessagePack re-encoding. `error` is
 * set when the payload did not decode; `data` is then `undefined`.
 */
export function toMessage(raw: RawDelivery, mode: DecodeMode): { message: Message; error?: unknown } {
  const base = { topic: raw.topic, epoch: raw.epoch, seq: raw.seq, time: raw.time };
  if (raw.json && mode === 'msgpack') {
    return { message: { ...base, data: raw.json.value, payload: raw.payload ?? encodeValue(raw.json.value) } };
  }
  const payload = raw.payload ?? (raw.json ? encodeValue(raw.json.value) : new Uint8Array(0));
  try {
    return { message: { ...base, data: decodePayload(mode, payload), payload } };
  } catch (error) {
    return { message: { ...base, data: undefined, payload }, error };
  }
}

/**
 * A delivery JSON object of SSE and long-poll
 * (`{"topic","epoch","seq","time","data"|"data_base64"}`); throws when it
 * does not have that shape.
 */
export function parseDeliveryJson(value: unknown): RawDelivery {
  if (typeof value !== 'object' || value === null) throw new TypeError('a delivery is a JSON object');
  const v = value as Record<string, unknown>;
  const { topic, epoch, seq, time } = v;
  if (typeof topic !== 'string') throw new TypeError('delivery without a topic');
  if (typeof epoch !== 'string' || !/^\d+$/.test(epoch)) throw new TypeError('delivery epoch is a decimal string');
  if (typeof seq !== 'number' || typeof time !== 'number') throw new TypeError('delivery seq and time are numbers');
  const raw: RawDelivery = { topic, epoch, seq, time };
  if (typeof v['data_base64'] === 'string') raw.payload = fromBase64(v['data_base64']);
  else if ('data' in v) raw.json = { value: v['data'] };
  else throw new TypeError('delivery without data or data_base64');
  return raw;
}
