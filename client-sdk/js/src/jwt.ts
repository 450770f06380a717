/** Reading a JWT's `exp` claim, without verifying anything, to schedule a refresh before it expires. */
import { fromBase64 } from './base64.js';

/** The `exp` (Unix seconds) of a JWT, or `undefined` when the token is not a JWT or has none. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims: unknown = JSON.parse(new TextDecoder().decode(fromBase64(parts[1] as string)));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long to wait before refreshing a token that expires at `exp` (Unix
 * seconds), seen at `nowMs`: 80 % of its remaining life (as the Rust SDK),
 * at least 1 s; `undefined` when it has no expiry.
 */
export function refreshDelayMs(exp: number | undefined, nowMs: number): number | undefined {
  if (exp === undefined) return undefined;
  const remaining = exp * 1000 - nowMs;
  return Math.max(1000, Math.floor(remaining * 0.8));
}
