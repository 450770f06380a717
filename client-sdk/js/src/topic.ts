/**
 * Topic and pattern rules of protocol.md section 9: validation (so a bad
 * pattern fails locally, before anything is sent) and matching (so one
 * `MESSAGE`, which the broker sends once per connection, is dispatched to
 * every local subscription whose pattern matches its topic).
 */

/** Longest topic or pattern, in bytes (`MAX_TOPIC_LEN`). */
export const MAX_TOPIC_LEN = 255;
/** Most tokens in a topic or pattern (`MAX_TOKENS`). */
export const MAX_TOKENS = 16;

const TOKEN = /^[A-Za-z0-9_\-:@~]+$/;

/** Why `s` is not a valid pattern (or topic, when `wildcards` is false); `null` when it is valid. */
function problem(s: string, wildcards: boolean): string | null {
  if (s.length === 0) return 'empty';
  if (s.length > MAX_TOPIC_LEN) return `longer than ${MAX_TOPIC_LEN} bytes`;
  const tokens = s.split('.');
  if (tokens.length > MAX_TOKENS) return `more than ${MAX_TOKENS} tokens`;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t === '') return 'empty token';
    if (t === '*' || t === '>') {
      if (!wildcards) return "wildcards '*' and '>' are only allowed in subscription patterns";
      if (t === '>' && i !== tokens.length - 1) return "'>' must be the last token";
      continue;
    }
    if (!TOKEN.test(t)) return `bad token ${JSON.stringify(t)}: letters, digits and _ - : @ ~ only`;
  }
  return null;
}

/** Why `pattern` is not a valid subscription pattern, or `null` when it is. */
export function patternProblem(pattern: string): string | null {
  return problem(pattern, true);
}

/** Why `topic` is not a valid topic to publish on, or `null` when it is. */
export function topicProblem(topic: string): string | null {
  return problem(topic, false);
}

/**
 * Whether `topic` matches `pattern` (protocol.md section 9.2): `*` is one
 * token, `>` one or more trailing tokens, anything else compares byte for byte.
 */
export function matches(pattern: string, topic: string): boolean {
  const t = topic.split('.');
  const p = pattern.split('.');
  let i = 0;
  for (const token of p) {
    if (i === t.length) return false;
    if (token === '>') return true;
    if (token !== '*' && token !== t[i]) return false;
    i++;
  }
  return i === t.length;
}
