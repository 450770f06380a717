/**
 * Per-topic positions `[epoch, seq]` of the last message handed to a
 * subscription: the `since` of every resubscribe (WebSocket) and the
 * `cursor` of every SSE stream or poll session, and the duplicate filter
 * for what a resume replays (docs/client.md, "Resuming after a reconnect").
 */
import type { Position } from './codec.js';

/** Most topics tracked per subscription; the least recently delivered are forgotten beyond it. */
export const MAX_TRACKED_TOPICS = 65_536;

/** What {@link PositionTracker.accept} decided about a delivery. */
export type Verdict = 'new' | 'duplicate';

/** Positions of one broker subscription (pattern), most recently delivered last. */
export class PositionTracker {
  private positions = new Map<string, Position>();

  constructor(initial?: Record<string, Position>) {
    if (initial) for (const [topic, pos] of Object.entries(initial)) this.positions.set(topic, [pos[0], pos[1]]);
  }

  /**
   * Records a delivery: a repeat (same epoch, seq not after the remembered
   * one) is a `duplicate` and changes nothing; anything else, including
   * another epoch (the topic was reset), is `new` and becomes the position.
   */
  accept(topic: string, epoch: string, seq: number): Verdict {
    const known = this.positions.get(topic);
    if (known && known[0] === epoch && seq <= known[1]) return 'duplicate';
    this.positions.delete(topic);
    this.positions.set(topic, [epoch, seq]);
    if (this.positions.size > MAX_TRACKED_TOPICS) {
      const oldest = this.positions.keys().next().value;
      if (oldest !== undefined) this.positions.delete(oldest);
    }
    return 'new';
  }

  /**
   * Takes the broker's word for topics it could not resume (`missed` of
   * SUBSCRIBED): their current position, so what follows is not taken for a
   * repeat or reported twice.
   */
  reset(missed: Record<string, Position>): void {
    for (const [topic, pos] of Object.entries(missed)) {
      this.positions.delete(topic);
      if (pos[0] !== '0') this.positions.set(topic, [pos[0], pos[1]]);
    }
  }

  /** The position of `topic`, if tracked. */
  get(topic: string): Position | undefined {
    return this.positions.get(topic);
  }

  /** Number of tracked topics. */
  get size(): number {
    return this.positions.size;
  }

  /** Every tracked position, least recently delivered first (a `since` map). */
  snapshot(): Record<string, Position> {
    const out: Record<string, Position> = {};
    for (const [topic, pos] of this.positions) out[topic] = [pos[0], pos[1]];
    return out;
  }
}

/**
 * One cursor for several subscriptions sharing an SSE stream or a poll
 * session: per topic the earliest position any of them holds (each
 * subscription drops what it already had), topics in delivery order.
 */
export function mergePositions(maps: Iterable<Record<string, Position>>): Record<string, Position> {
  const out: Record<string, Position> = {};
  for (const map of maps) {
    for (const [topic, pos] of Object.entries(map)) {
      const known = out[topic];
      if (!known || (known[0] === pos[0] && pos[1] < known[1])) out[topic] = [pos[0], pos[1]];
    }
  }
  return out;
}
