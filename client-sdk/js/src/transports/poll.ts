/**
 * The long-poll transport: `GET /v1/poll` per group, in a loop. Every
 * request carries the cursor built from tracked positions (once the
 * subscriptions are confirmed) and, after the first, the `session` id: a
 * live session ignores the cursor; an expired or unknown one (a tab that
 * stopped polling, another node, a restart) is replaced by a new session
 * resuming from it, without a gap. Each
 * request is held by the broker up to `timeout` seconds, and bounded here by
 * that plus the connect timeout.
 */
import { closeError, httpError, isFinalClose, TickwireError } from '../errors.js';
import { fetchWithDeadline } from './http.js';
import { streamQuery, StreamTransport, type Group } from './streams.js';

interface PollAnswer {
  session?: unknown;
  messages?: unknown;
  events?: unknown;
}

/** Long-poll transport. */
export class PollTransport extends StreamTransport {
  readonly kind = 'poll' as const;

  protected async run(group: Group): Promise<void> {
    let session: string | undefined;
    while (!group.stopped) {
      const extra: Array<[string, string]> = [
        ['timeout', String(this.ctx.pollTimeoutS)],
        ['client', this.ctx.clientId],
      ];
      if (session) extra.push(['session', session]);
      const url = `${this.ctx.httpBase}/v1/poll?${streamQuery(group.subs, this.ctx.token, extra)}`;
      let answered: { res: Response; text: string };
      try {
        answered = await fetchWithDeadline(this.ctx, url, {}, this.ctx.pollTimeoutS * 1000 + this.ctx.connectTimeoutMs, group.controller.signal, true);
      } catch (err) {
        if (group.stopped) return;
        throw err;
      }
      const { res, text } = answered;
      if (group.stopped) return;
      if (!res.ok) throw httpError(res.status, text);
      let answer: PollAnswer;
      try {
        answer = JSON.parse(text) as PollAnswer;
      } catch {
        throw new TickwireError('protocol', `poll answer that is not JSON: ${text.slice(0, 200)}`);
      }
      group.started();
      session = typeof answer.session === 'string' ? answer.session : undefined;
      let final: TickwireError | undefined;
      // Join/leave events say where they belong among the messages
      // (`after`: how many of the answer's messages precede them).
      const presence: Array<{ after: number; event: Record<string, unknown> }> = [];
      for (const event of Array.isArray(answer.events) ? answer.events : []) {
        if (typeof event !== 'object' || event === null) continue;
        const e = event as Record<string, unknown>;
        if (e['type'] === 'subscribed') this.onSubscribed(e);
        else if (e['type'] === 'error') this.onError(e);
        else if (e['type'] === 'join' || e['type'] === 'leave') presence.push({ after: typeof e['after'] === 'number' ? e['after'] : Infinity, event: e });
        else if (e['type'] === 'close') {
          session = undefined;
          const code = typeof e['code'] === 'number' ? e['code'] : 1011;
          if (isFinalClose(code)) final = closeError(code, `poll session closed (${code} ${typeof e['reason'] === 'string' ? e['reason'] : ''})`);
        }
      }
      const messages: unknown[] = Array.isArray(answer.messages) ? answer.messages : [];
      let next = 0;
      const presenceUpTo = (count: number): void => {
        while (next < presence.length && (presence[next] as { after: number }).after <= count) {
          const { event } = presence[next] as { event: Record<string, unknown> };
          next++;
          this.onPresence(event['type'] as 'join' | 'leave', event);
        }
      };
      messages.forEach((message, i) => {
        presenceUpTo(i);
        this.onDelivery(message);
      });
      presenceUpTo(Infinity);
      if (final) throw final;
    }
  }
}
