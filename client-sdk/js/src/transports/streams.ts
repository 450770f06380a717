/**
 * What the SSE and long-poll transports share: subscriptions are the `sub`
 * query parameters of a stream (SSE) or poll session, so they are grouped by
 * the options the broker applies to a whole request (`max_rate`; `last` and
 * `payload` are taken for the group as a whole), one request loop per
 * group. Changing a group's subscriptions restarts its loop with a cursor
 * built from the positions the client tracks, so nothing is lost (for
 * topics that keep history) and nothing is delivered twice.
 */
import { decodeValue, type Position, type PresenceEntry, type PresenceInfo, type SubscribedInfo } from '../codec.js';
import { fromBase64 } from '../base64.js';
import { encodeCursor } from '../cursor.js';
import { httpError, TickwireError } from '../errors.js';
import { parseDeliveryJson } from '../message.js';
import { mergePositions } from '../positions.js';
import { fetchWithDeadline, httpPublish } from './http.js';
import type { Transport, TransportContext, TransportKind, WireSubscription } from './transport.js';

/** Codes of a refused request that name a subscription problem rather than a connection problem. */
const SUBSCRIPTION_REFUSALS = new Set(['forbidden', 'invalid_pattern', 'invalid_option', 'too_many_subscriptions', 'too_many_topics']);

/** One request loop: the subscriptions it carries and how to stop it. */
export interface Group {
  readonly key: string;
  readonly subs: WireSubscription[];
  readonly signature: string;
  readonly controller: AbortController;
  stopped: boolean;
  /** Called once the broker accepted the request (200). */
  started: () => void;
}

/**
 * The query string of a stream or poll request for `subs` (plus `extra`
 * parameters); with `withCursor`, the cursor of the subscriptions that
 * resume (their earliest position per topic).
 */
export function streamQuery(subs: WireSubscription[], token: string | undefined, extra: Array<[string, string]> = [], withCursor = true): string {
  const params = new URLSearchParams();
  for (const sub of subs) params.append('sub', sub.pattern);
  if (subs.some((s) => s.last)) params.append('last', '1');
  const maxRate = subs[0]?.maxRate;
  if (maxRate !== undefined) params.append('max_rate', String(maxRate));
  if (subs.some((s) => s.rawPayload)) params.append('payload', 'base64');
  const joinLeave = subs[0]?.joinLeave;
  if (joinLeave !== undefined) params.append('join_leave', joinLeave);
  const sinces = subs.map((s) => s.since()).filter((s): s is Record<string, Position> => s !== undefined);
  if (withCursor && sinces.length > 0) params.append('cursor', encodeCursor(mergePositions(sinces)));
  for (const [k, v] of extra) params.append(k, v);
  if (token) params.append('token', token);
  return params.toString();
}

/** `info` of a `subscribed` event (SSE data or poll event): epochs and seqs may come as strings. */
export function subscribedEventInfo(value: Record<string, unknown>): SubscribedInfo {
  const info: SubscribedInfo = {};
  if (typeof value['recovered'] === 'boolean') info.recovered = value['recovered'];
  if (value['epoch'] !== undefined) info.epoch = String(value['epoch']);
  if (value['seq'] !== undefined) info.seq = Number(value['seq']);
  const missed = value['missed'];
  if (typeof missed === 'object' && missed !== null) {
    info.missed = {};
    for (const [topic, pos] of Object.entries(missed as Record<string, unknown>)) {
      if (Array.isArray(pos) && pos.length === 2) info.missed[topic] = [String(pos[0]), Number(pos[1])];
    }
  }
  if (typeof value['client'] === 'string') info.client = value['client'];
  return info;
}

/**
 * A presence entry as the broker's JSON renders it (SSE/poll `join` and
 * `leave` events, `GET /v1/presence/{topic}`): `client`, `user`, and `info`
 * as JSON or `info_base64` (its MessagePack bytes, decoded here).
 */
export function presenceEntryJson(value: Record<string, unknown>): PresenceEntry {
  const entry: PresenceEntry = {};
  if (typeof value['client'] === 'string') entry.client = value['client'];
  if (typeof value['user'] === 'string') entry.user = value['user'];
  if ('info' in value) entry.info = value['info'];
  else if (typeof value['info_base64'] === 'string') entry.info = decodeValue(fromBase64(value['info_base64']));
  return entry;
}

/** The group key of a subscription: the request-wide options it needs (`max_rate`, `join_leave`). */
function groupKey(sub: WireSubscription): string {
  return `${sub.maxRate ?? ''}|${sub.joinLeave ?? ''}`;
}

/** Base of the SSE and poll transports: groups, restarts, publishing over HTTP. */
export abstract class StreamTransport implements Transport {
  abstract readonly kind: TransportKind;
  private groups = new Map<string, Group>();
  /** Subscriptions the broker refused (until the client drops them; a new subscribe is a new object). */
  private refused = new WeakSet<WireSubscription>();
  private syncQueued = false;
  private closed = false;
  private opened = false;

  constructor(protected readonly ctx: TransportContext) {}

  /** Runs one group's requests until stopped (resolve) or failed (reject); calls `group.started` on the first 200. */
  protected abstract run(group: Group): Promise<void>;

  async open(): Promise<void> {
    const desired = this.desired();
    try {
      if (desired.size === 0) {
        await this.probe();
      } else {
        await Promise.all([...desired.values()].map((subs) => this.start(subs[0] as WireSubscription, subs)));
      }
    } catch (err) {
      this.close();
      throw err;
    }
    this.opened = true;
  }

  /** Checks the broker answers HTTP at all (any status), when there is nothing to subscribe. */
  private async probe(): Promise<void> {
    await fetchWithDeadline(this.ctx, `${this.ctx.httpBase}/healthz`, {}, this.ctx.connectTimeoutMs, undefined, true);
  }

  /** The subscriptions to carry now, by group key; those the broker refused are left out. */
  private desired(): Map<string, WireSubscription[]> {
    const groups = new Map<string, WireSubscription[]>();
    for (const sub of this.ctx.host.subscriptions()) {
      if (this.refused.has(sub)) continue;
      const key = groupKey(sub);
      const list = groups.get(key) ?? [];
      list.push(sub);
      groups.set(key, list);
    }
    return groups;
  }

  private static signature(subs: WireSubscription[]): string {
    return subs
      .map((s) => `${s.pattern}|${s.last}|${s.rawPayload}`)
      .sort()
      .join('\n');
  }

  /**
   * Starts a group's loop; resolves on its first 200 and rejects if it
   * fails before (while the transport is opening). A request refused for a
   * subscription reason (`forbidden`, `invalid_pattern`, ...) refuses the
   * group's subscriptions the broker never confirmed and starts again
   * without them; any other failure after the first 200 is a loss.
   */
  private start(first: WireSubscription, subs: WireSubscription[]): Promise<void> {
    const key = groupKey(first);
    const previous = this.groups.get(key);
    if (previous) {
      previous.stopped = true;
      previous.controller.abort();
    }
    return new Promise((resolve, reject) => {
      let started = false;
      const group: Group = {
        key,
        subs,
        signature: StreamTransport.signature(subs),
        controller: new AbortController(),
        stopped: false,
        started: () => {
          if (started) return;
          started = true;
          resolve();
        },
      };
      this.groups.set(key, group);
      this.run(group).then(
        () => undefined,
        (err: unknown) => {
          if (group.stopped || this.closed) return;
          const error = err instanceof TickwireError ? err : new TickwireError('transport', String(err));
          group.stopped = true;
          group.controller.abort();
          if (this.groups.get(key) === group) this.groups.delete(key);
          const fresh = group.subs.filter((s) => !s.everConfirmed);
          if (SUBSCRIPTION_REFUSALS.has(error.code) && fresh.length > 0) {
            void this.blame(fresh, error).then(() => {
              if (this.closed) return;
              const rest = this.desired().get(key);
              if (!rest) {
                started = true;
                resolve();
                return;
              }
              this.start(rest[0] as WireSubscription, rest).then(resolve, reject);
            });
            return;
          }
          if (!started && !this.opened) {
            reject(error);
            return;
          }
          started = true;
          resolve();
          this.closeAll();
          this.ctx.host.lost(error);
        },
      );
    });
  }

  /**
   * Finds which of `fresh` the broker refuses: alone there is nothing to
   * find; among several, each is asked about with an immediate poll
   * (`timeout=0`, one request per subscription, only on this error path).
   * Those refused (or all, when none is singled out) are reported refused
   * and left out of later requests.
   */
  private async blame(fresh: WireSubscription[], error: TickwireError): Promise<void> {
    let guilty: Array<[WireSubscription, TickwireError]> = fresh.map((sub) => [sub, error]);
    if (fresh.length > 1) {
      const verdicts = await Promise.all(
        fresh.map(async (sub): Promise<[WireSubscription, TickwireError] | null> => {
          const url = `${this.ctx.httpBase}/v1/poll?${streamQuery([sub], this.ctx.token, [['timeout', '0'], ['client', this.ctx.clientId]], false)}`;
          try {
            const { res, text } = await fetchWithDeadline(this.ctx, url, {}, this.ctx.connectTimeoutMs, undefined, true);
            const refusal = res.ok ? null : httpError(res.status, text);
            return refusal && SUBSCRIPTION_REFUSALS.has(refusal.code) ? [sub, refusal] : null;
          } catch {
            return null;
          }
        }),
      );
      const found = verdicts.filter((v): v is [WireSubscription, TickwireError] => v !== null);
      if (found.length > 0) guilty = found;
    }
    for (const [sub, refusal] of guilty) {
      this.refused.add(sub);
      this.ctx.host.refused(sub.pattern, refusal);
    }
  }

  /** Restarts (soon, once per burst of changes) every group whose subscriptions changed. */
  protected sync(): void {
    if (this.syncQueued || this.closed) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      if (this.closed) return;
      const desired = this.desired();
      for (const [key, group] of this.groups) {
        if (!desired.has(key)) {
          group.stopped = true;
          group.controller.abort();
          this.groups.delete(key);
        }
      }
      for (const [key, subs] of desired) {
        const group = this.groups.get(key);
        if (group && group.signature === StreamTransport.signature(subs)) continue;
        if (group) {
          group.stopped = true;
          group.controller.abort();
        }
        void this.start(subs[0] as WireSubscription, subs);
      }
    });
  }

  /** Handles a `subscribed` event of a group. */
  protected onSubscribed(value: Record<string, unknown>): void {
    if (typeof value['sub'] === 'string') this.ctx.host.subscribed(value['sub'], subscribedEventInfo(value));
  }

  /** Handles a per-subscription `error` event of a group. */
  protected onError(value: Record<string, unknown>): void {
    const error = new TickwireError(typeof value['code'] === 'string' ? value['code'] : 'internal', typeof value['message'] === 'string' ? value['message'] : 'subscription refused');
    if (typeof value['sub'] === 'string') this.ctx.host.refused(value['sub'], error);
    else this.ctx.host.report(error);
  }

  /** Handles a `join` or `leave` event (`{"topic", "client"?, "user"?, "info"?}`). */
  protected onPresence(kind: 'join' | 'leave', value: Record<string, unknown>): void {
    if (typeof value['topic'] !== 'string') {
      this.ctx.host.report(new TickwireError('protocol', `${kind} event without a topic`));
      return;
    }
    this.ctx.host.presence(kind, value['topic'], presenceEntryJson(value));
  }

  /** Handles one delivery JSON object. */
  protected onDelivery(value: unknown): void {
    try {
      this.ctx.host.deliver(parseDeliveryJson(value));
    } catch (err) {
      this.ctx.host.report(new TickwireError('protocol', `bad delivery: ${String(err)}`));
    }
  }

  subscribe(_sub: WireSubscription): void {
    this.sync();
  }

  unsubscribe(_pattern: string): void {
    this.sync();
  }

  publish(topic: string, payload: Uint8Array, retain: boolean): Promise<number> {
    return httpPublish(this.ctx, topic, payload, retain);
  }

  publishNoAck(topic: string, payload: Uint8Array): void {
    httpPublish(this.ctx, topic, payload, false).catch((err: unknown) => {
      this.ctx.host.report(err instanceof TickwireError ? err : new TickwireError('transport', String(err)));
    });
  }

  /**
   * Presence over HTTP (`GET /v1/presence/{topic}[/stats]`, the server API),
   * with the token as bearer: streams cannot send `PRESENCE`.
   */
  async presence(topic: string, countsOnly: boolean): Promise<PresenceInfo> {
    const headers: Record<string, string> = {};
    if (this.ctx.token) headers['authorization'] = `Bearer ${this.ctx.token}`;
    const url = `${this.ctx.httpBase}/v1/presence/${topic}${countsOnly ? '/stats' : ''}`;
    const { res, text } = await fetchWithDeadline(this.ctx, url, { headers }, this.ctx.requestTimeoutMs, undefined, true);
    if (!res.ok) throw httpError(res.status, text);
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new TickwireError('protocol', `presence answer that is not JSON: ${text.slice(0, 200)}`);
    }
    const clients = value['clients'];
    const users = value['users'];
    if (typeof clients !== 'number' || typeof users !== 'number') throw new TickwireError('protocol', `unexpected presence answer: ${text.slice(0, 200)}`);
    const info: PresenceInfo = { clients, users };
    if (Array.isArray(value['entries'])) {
      info.entries = value['entries'].filter((e): e is Record<string, unknown> => typeof e === 'object' && e !== null).map(presenceEntryJson);
    }
    return info;
  }

  async refresh(token: string): Promise<void> {
    this.ctx.token = token;
    for (const group of this.groups.values()) {
      group.stopped = true;
      group.controller.abort();
    }
    this.groups.clear();
    this.sync();
  }

  private closeAll(): void {
    for (const group of this.groups.values()) {
      group.stopped = true;
      group.controller.abort();
    }
    this.groups.clear();
  }

  close(): void {
    this.closed = true;
    this.closeAll();
  }
}
