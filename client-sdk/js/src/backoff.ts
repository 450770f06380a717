/**
 * Reconnect delays: exponential backoff with full jitter, as the Rust SDK
 * (docs/client.md): before attempt `n` (from 1) wait a uniformly random time
 * in `[0, min(max, initial × 2^(n−1))]`.
 */

/** Backoff settings (the `reconnect` option of the client). */
export interface ReconnectOptions {
  /** Upper bound of the first delay, in ms (default 100). */
  initialDelayMs?: number;
  /** Cap of the upper bound, in ms (default 30000). */
  maxDelayMs?: number;
}

/** Default upper bound of the first reconnect delay. */
export const DEFAULT_INITIAL_DELAY_MS = 100;
/** Default cap of the reconnect delay. */
export const DEFAULT_MAX_DELAY_MS = 30_000;

/** The delay before attempt `attempt` (1-based); `random` returns a number in [0, 1). */
export function backoffDelay(attempt: number, options: ReconnectOptions = {}, random: () => number = Math.random): number {
  const initial = Math.max(0, options.initialDelayMs ?? DEFAULT_INITIAL_DELAY_MS);
  const max = Math.max(initial, options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS);
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
  const ceiling = Math.min(max, initial * 2 ** exponent);
  return Math.floor(random() * ceiling);
}
