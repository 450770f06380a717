/**
 * One broker subscription (one pattern) of the client: its options, the
 * local subscriptions sharing it, and the positions it resumes from.
 */
import type { JoinLeaveKind, Position } from './codec.js';
import { PositionTracker } from './positions.js';
import type { Subscription } from './subscription.js';
import type { WireSubscription } from './transports/transport.js';

/** A pattern's broker subscription and its local subscribers. */
export class PatternEntry implements WireSubscription {
  readonly pattern: string;
  readonly last: boolean;
  readonly maxRate: number | undefined;
  readonly resume: boolean;
  readonly joinLeave: JoinLeaveKind | undefined;
  readonly tracker: PositionTracker;
  readonly subs = new Set<Subscription>();
  /** Confirmed on the current connection. */
  confirmed = false;
  everConfirmed = false;
  /** Whether the last subscribe request carried `since`. */
  sentSince = false;
  private readonly userSince: boolean;

  constructor(pattern: string, options: { last?: boolean; maxRate?: number; resume?: boolean; since?: Record<string, Position> }, joinLeave: JoinLeaveKind | undefined) {
    this.pattern = pattern;
    this.last = options.last ?? false;
    this.maxRate = options.maxRate === undefined ? undefined : Math.max(1, Math.floor(options.maxRate));
    this.resume = options.resume ?? true;
    this.joinLeave = joinLeave;
    this.userSince = options.since !== undefined;
    this.tracker = new PositionTracker(options.since);
  }

  get rawPayload(): boolean {
    for (const sub of this.subs) if (sub.decode !== 'msgpack') return true;
    return false;
  }

  /** Given `since` on the first subscribe; tracked positions on every renewal while `resume` is on. */
  since(): Record<string, Position> | undefined {
    const resumes = this.everConfirmed ? this.resume : this.userSince;
    const since = resumes ? this.tracker.snapshot() : undefined;
    this.sentSince = since !== undefined;
    return since;
  }
}
