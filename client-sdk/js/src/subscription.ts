/**
 * One local subscription: callbacks (`on('message')`) and/or an async
 * iterator over a bounded queue. Several local subscriptions of one
 * pattern share one broker subscription (the client's `PatternEntry`).
 */
import type { JoinLeaveKind, Position, PresenceEntry, SubscribedInfo } from './codec.js';
import { Emitter } from './emitter.js';
import { TickwireError } from './errors.js';
import type { DecodeMode, Message } from './message.js';

/** Options of `client.subscribe`. */
export interface SubscribeOptions {
  /** Start with the latest retained message of each matching topic, then live. */
  last?: boolean;
  /** At most this many messages per second per topic, the newest (the broker conflates). */
  maxRate?: number;
  /** Resume from these positions (`topic → [epoch, seq]` of the last message processed). */
  since?: Record<string, Position>;
  /** How payloads become `data`: MessagePack (default), UTF-8 JSON, or the raw bytes. */
  decode?: DecodeMode;
  /** Most messages the iterator queue holds (default 1024); beyond it the oldest is dropped. */
  bufferSize?: number;
  /** Renew the subscription from tracked positions after a reconnect (default true). */
  resume?: boolean;
  /**
   * Join/leave events of the topics (with presence) it covers: `true` or
   * `'clients'` one per client instance, `'users'` one per user; `false`
   * (default) none. They arrive as `join`/`leave` events.
   */
  joinLeave?: boolean | JoinLeaveKind;
  /** A `join` listener, registered before anything can arrive. */
  onJoin?: (event: PresenceEvent) => void;
  /** A `leave` listener, registered before anything can arrive. */
  onLeave?: (event: PresenceEvent) => void;
}

/** A join or leave on a topic: the entry (connection-level: `client`; user-level: no `client`). */
export interface PresenceEvent extends PresenceEntry {
  /** The topic joined or left. */
  topic: string;
}

/** The join/leave kind of a `joinLeave` option; throws a message for a value that is none. */
export function joinLeaveKind(option: SubscribeOptions['joinLeave']): JoinLeaveKind | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true || option === 'clients') return 'clients';
  if (option === 'users') return 'users';
  throw new TypeError(`joinLeave must be true, false, 'clients' or 'users', not ${JSON.stringify(option)}`);
}

/** Default bound of a subscription's iterator queue. */
export const DEFAULT_BUFFER_SIZE = 1024;

/** Events of a {@link Subscription}. */
export type SubscriptionEvents = {
  /** A delivered message. */
  message: (message: Message) => void;
  /** A client (or user) joined a topic (`joinLeave`), in order with the messages. */
  join: (event: PresenceEvent) => void;
  /** A client (or user) left a topic (`joinLeave`), in order with the messages. */
  leave: (event: PresenceEvent) => void;
  /** The broker confirmed (or, after a reconnect, renewed) the subscription. */
  subscribed: (info: SubscribedInfo) => void;
  /** Something went wrong: a payload did not decode, or the subscription was refused (then `end` follows). */
  error: (error: TickwireError) => void;
  /** The subscription ended: unsubscribed, client closed, or refused (with the error). */
  end: (error?: TickwireError) => void;
};

/** What a subscription needs from its client. */
export interface SubscriptionOwner {
  /** Removes the subscription from the client (and the broker subscription with the last one). */
  detach(sub: Subscription): void;
}

/** A subscription to one pattern; create it with `client.subscribe`. */
export class Subscription extends Emitter<SubscriptionEvents> implements AsyncIterable<Message> {
  /** The pattern subscribed to. */
  readonly pattern: string;
  /** How payloads are decoded. */
  readonly decode: DecodeMode;
  /** Resolves once the broker confirmed the subscription; rejects with the broker's refusal. */
  readonly ready: Promise<void>;
  /** Messages dropped from the iterator queue because it was full (oldest first). */
  dropped = 0;

  private readonly owner: SubscriptionOwner;
  private readonly bound: number;
  private queue: Message[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void } | null = null;
  private iterating = false;
  private ended = false;
  private endError: TickwireError | undefined;
  private settle: { resolve: () => void; reject: (e: TickwireError) => void } | null;

  /** @internal */
  constructor(pattern: string, options: SubscribeOptions, owner: SubscriptionOwner) {
    super();
    this.pattern = pattern;
    this.decode = options.decode ?? 'msgpack';
    this.bound = Math.max(1, options.bufferSize ?? DEFAULT_BUFFER_SIZE);
    this.owner = owner;
    let settle: { resolve: () => void; reject: (e: TickwireError) => void } | null = null;
    this.ready = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.ready.catch(() => undefined);
    this.settle = settle;
    if (options.onJoin) this.on('join', options.onJoin);
    if (options.onLeave) this.on('leave', options.onLeave);
  }

  /** Whether the subscription has ended. */
  get closed(): boolean {
    return this.ended;
  }

  /** Ends the subscription (the broker subscription goes with the last local one of the pattern). */
  unsubscribe(): void {
    if (this.ended) return;
    this.owner.detach(this);
    this.finish(undefined);
  }

  /** @internal The broker confirmed or renewed the subscription. */
  confirm(info: SubscribedInfo): void {
    if (this.ended) return;
    if (this.settle) {
      this.settle.resolve();
      this.settle = null;
    }
    this.emit('subscribed', info);
  }

  /** @internal Hands a message to the callbacks and, unless only callbacks are used, to the queue. */
  deliver(message: Message, decodeError?: unknown): void {
    if (this.ended) return;
    if (decodeError !== undefined) {
      this.emit('error', new TickwireError('decode', `payload of ${message.topic} #${message.seq} does not decode as ${this.decode}: ${String(decodeError)}`));
    }
    this.emit('message', message);
    if (!this.iterating && this.has('message')) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: message, done: false });
      return;
    }
    this.queue.push(message);
    if (this.queue.length - this.head > this.bound) {
      this.head++;
      this.dropped++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** @internal A join or leave event. */
  presence(kind: 'join' | 'leave', event: PresenceEvent): void {
    if (!this.ended) this.emit(kind, event);
  }

  /** @internal Ends the subscription, with the error that ended it if any. */
  finish(error: TickwireError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.endError = error;
    if (this.settle) {
      this.settle.reject(error ?? new TickwireError('closed', `subscription ${this.pattern} ended before it was confirmed`));
      this.settle = null;
    }
    if (error) this.emit('error', error);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      if (error) {
        this.endError = undefined;
        w.reject(error);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
    this.emit('end', error);
  }

  /**
   * Messages in order; the iteration ends when the subscription ends
   * (throwing the error that ended it, if any). Breaking out of a
   * `for await` loop unsubscribes.
   */
  [Symbol.asyncIterator](): AsyncIterator<Message> {
    this.iterating = true;
    return {
      next: () => {
        if (this.head < this.queue.length) {
          const value = this.queue[this.head] as Message;
          this.head++;
          if (this.head === this.queue.length) {
            this.queue = [];
            this.head = 0;
          }
          return Promise.resolve({ value, done: false });
        }
        if (this.ended) {
          const error = this.endError;
          this.endError = undefined;
          return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.waiter = { resolve, reject };
        });
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
