/**
 * Errors the client reports: the broker's codes (protocol.md section 10, by
 * their snake_case names, the same as in HTTP error bodies) and a few
 * client-side ones.
 */

/** Error codes the client itself produces. */
export type ClientErrorCode =
  | 'transport' // the connection failed or was lost (the outcome of a pending request is unknown)
  | 'timeout' // no reply within the request timeout
  | 'closed' // the client was closed
  | 'buffer_full' // the offline publish buffer is full
  | 'decode' // a payload could not be decoded as the subscription asked
  | 'protocol' // the broker sent something this client does not understand
  | 'disconnected'; // the broker closed the connection for good (close 4007 or 4500-4999): no reconnect

/** An error with a stable `code`: a broker code such as `forbidden`, or a {@link ClientErrorCode}. */
export class TickwireError extends Error {
  /** The broker's snake_case error code, or a client-side one. */
  readonly code: string;
  /** The WebSocket close code or HTTP status behind the error, when there is one. */
  readonly status: number | undefined;

  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = 'TickwireError';
    this.code = code;
    this.status = status;
  }
}

/** Error code numbers of `ERROR` messages, by position (protocol.md section 10). */
const CODE_NAMES: readonly string[] = [
  'unknown',
  'malformed',
  'unknown_message_type',
  'invalid_topic',
  'invalid_pattern',
  'invalid_option',
  'too_many_subscriptions',
  'already_subscribed',
  'not_subscribed',
  'too_many_topics',
  'payload_too_large',
  'shutting_down',
  'internal',
  'forbidden',
  'unauthorized',
  'rate_limited',
  'storage_full',
  'presence_full',
  'presence_disabled',
];

/** The name of an `ERROR` code number; unknown numbers count as `internal` (protocol.md section 17). */
export function errorCodeName(code: number): string {
  return code > 0 && code < CODE_NAMES.length ? (CODE_NAMES[code] as string) : 'internal';
}

/**
 * A TickwireError from a non-2xx HTTP answer: the JSON body's
 * `{"error":{"code","message"}}` when there is one, else a code from the status.
 */
export function httpError(status: number, body: string): TickwireError {
  try {
    const parsed: unknown = JSON.parse(body);
    const error = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (error && typeof error.code === 'string') {
      return new TickwireError(error.code, typeof error.message === 'string' ? error.message : error.code, status);
    }
  } catch {
    // not JSON: fall through to the status
  }
  // Not the broker's JSON: a proxy or another server answered. Only 401 is
  // taken at its word; anything else is a transport failure (try the next
  // transport, retry later), never a refused subscription.
  const code = status === 401 ? 'unauthorized' : status >= 500 ? 'internal' : 'transport';
  return new TickwireError(code, `HTTP ${status}${body ? `: ${body.slice(0, 200)}` : ''}`, status);
}

/**
 * Whether a close code (WebSocket close, SSE/poll `close` event) ends the
 * client for good instead of reconnecting: 4007 (disconnected by the
 * server, e.g. `POST /v1/disconnect`) and the application range 4500-4999.
 * Codes 4100-4499 (and every other code) reconnect.
 */
export function isFinalClose(code: number | undefined): boolean {
  return code === 4007 || (code !== undefined && code >= 4500 && code <= 4999);
}

/** The error for a close with `code`: `disconnected` for a final one (see {@link isFinalClose}), `unauthorized` for 4003, else `transport`. */
export function closeError(code: number, message: string): TickwireError {
  const kind = isFinalClose(code) ? 'disconnected' : code === 4003 ? 'unauthorized' : 'transport';
  return new TickwireError(kind, message, code);
}

/** Whether an error of this code is worth retrying on another connection (the request itself was fine). */
export function isRetryable(code: string): boolean {
  return code === 'transport' || code === 'internal' || code === 'shutting_down' || code === 'timeout';
}
