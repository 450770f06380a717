// Helpers shared by the end-to-end tests: waiting on events, never on the clock.

/** Resolves with the first `count` messages the subscription yields. */
export async function take(sub, count) {
  const out = [];
  if (count === 0) return out;
  for await (const m of iterate(sub)) {
    out.push(m);
    if (out.length === count) break;
  }
  return out;
}

// An iterator that does not unsubscribe when the loop breaks.
function iterate(sub) {
  const it = sub[Symbol.asyncIterator]();
  return { [Symbol.asyncIterator]: () => ({ next: () => it.next() }) };
}

/** Resolves when `client` reaches `state` (at once if it is there). */
export function waitState(client, state, predicate = () => true) {
  return new Promise((resolve) => {
    if (client.state === state && predicate({ transport: client.transport })) {
      resolve({ transport: client.transport });
      return;
    }
    const off = client.on('state', (s, info) => {
      if (s === state && predicate(info)) {
        off();
        resolve(info);
      }
    });
  });
}

/** Resolves with the next event `name` of an emitter (subscription or client). */
export function nextEvent(emitter, name) {
  return new Promise((resolve) => {
    const off = emitter.on(name, (...args) => {
      off();
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** Publishes `n` messages `{label, i}` on `topic` with acknowledgement; resolves with their seqs. */
export async function publishN(client, topic, label, n) {
  const seqs = [];
  for (let i = 0; i < n; i++) seqs.push((await client.publish(topic, { label, i })).seq);
  return seqs;
}
