// SSE and long-poll against the real broker (GET /v1/sse, GET /v1/poll):
// a forced transport receives exactly what a WebSocket subscriber receives,
// the client falls back when WebSocket is refused, and resumes after a cut.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '../../dist/index.js';
import { startBroker, historyConfig, scratch, writeFile } from './broker.mjs';
import { startRelay } from './relay.mjs';
import { take, waitState, publishN, nextEvent } from './util.mjs';

let broker;
before(async () => {
  broker = await startBroker(['--config', historyConfig()]);
});
after(async () => {
  await broker?.stop();
});

function client(url, options = {}) {
  return new Client(url, { WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
}

const view = (m) => [m.topic, m.epoch, m.seq, m.time, JSON.stringify(m.data), Buffer.from(m.payload).toString('hex')];

for (const kind of ['sse', 'poll']) {
  test(`forced ${kind} receives exactly what WebSocket receives`, async () => {
    const ws = client(broker.wsUrl, { transports: ['websocket'] });
    const other = client(broker.httpUrl, { transports: [kind] });
    const auto = client(broker.httpUrl, { transports: [kind] });
    try {
      const topic = `same${kind}`;
      const wsTyped = ws.subscribe(`${topic}.*`);
      const wsRaw = ws.subscribe(`${topic}.>`, { decode: 'raw' });
      const typed = other.subscribe(`${topic}.*`);
      const raw = other.subscribe(`${topic}.>`, { decode: 'raw' });
      // `auto` has only MessagePack subscriptions: the broker renders payloads as JSON (payload=auto).
      const rendered = auto.subscribe(`${topic}.*`);
      await Promise.all([wsTyped.ready, wsRaw.ready, typed.ready, raw.ready, rendered.ready]);
      assert.equal(other.transport, kind);
      const payloads = [{ px: 1.5, sym: 'A' }, 'text', [1, 2, 3], null, 2 ** 40, new Uint8Array([0xc1, 0x00]), { nested: { a: [true, false] } }];
      for (const [i, p] of payloads.entries()) await ws.publish(`${topic}.t${i % 2}`, p);
      const viaHttp = await other.publish(`${topic}.t0`, { from: kind });
      assert.equal(viaHttp.seq, 5);
      const n = payloads.length + 1;
      const [a, b, c, d, e] = await Promise.all([take(wsTyped, n), take(typed, n), take(wsRaw, n), take(raw, n), take(rendered, n)]);
      const typedView = (m) => [m.topic, m.epoch, m.seq, m.time, JSON.stringify(m.data)];
      assert.deepEqual(b.map(typedView), a.map(typedView));
      assert.deepEqual(e.map(typedView), a.map(typedView), 'JSON-rendered payloads decode to the same values');
      assert.deepEqual(d.map(view), c.map(view), 'raw payloads byte for byte');
    } finally {
      ws.close();
      other.close();
      auto.close();
    }
  });
}

for (const [kind, blockPaths] of [['sse', ['/ws']], ['poll', ['/ws', '/v1/sse']]]) {
  test(`${blockPaths.join(' and ')} refused: falls back to ${kind}, receives in order, resumes after a cut`, async () => {
    const relay = await startRelay(broker.addr, { blockPaths });
    const publisher = client(broker.wsUrl, { transports: ['websocket'] });
    const c = client(relay.wsUrl);
    try {
      const sub = c.subscribe(`iot.fb${kind}.*`);
      await sub.ready;
      assert.equal(c.transport, kind);
      const topic = `iot.fb${kind}.a`;
      await publishN(publisher, topic, 'live', 5);
      assert.deepEqual((await take(sub, 5)).map((m) => m.seq), [1, 2, 3, 4, 5]);
      const down = waitState(c, 'disconnected');
      relay.cut();
      await down;
      await publishN(publisher, topic, 'missed', 20);
      // Restore only between two reconnect rounds: the client reports
      // `disconnected` when a round has failed and it backs off, and the
      // rest of this turn runs before its timer starts the next round.
      // Restored in the middle of a round, after that round's SSE attempt
      // was refused, the round's poll attempt would open and the client
      // would rightly settle on poll (the first transport that opens wins).
      await waitState(c, 'disconnected');
      const renewed = nextEvent(sub, 'subscribed');
      relay.restore();
      assert.equal((await renewed).recovered, true);
      assert.equal(c.transport, kind);
      await publisher.publish(topic, 'after');
      assert.deepEqual((await take(sub, 21)).map((m) => m.seq), Array.from({ length: 21 }, (_, i) => i + 6), 'no gap, no duplicate');
    } finally {
      publisher.close();
      c.close();
      await relay.stop();
    }
  });
}

test('a token in the query authenticates SSE; a refused pattern gets the broker code', async () => {
  const secret = writeFile(scratch(), 'secret', 'another-test-secret-of-at-least-32-bytes\n');
  const authed = await startBroker(['--jwt-hmac-secret-file', secret]);
  const { tickwire } = await import('./broker.mjs');
  const token = tickwire(['token', '--hmac-secret-file', secret, '--sub', 'ok.>', '--pub', 'ok.>', '--ttl', '1h']);
  const c = client(authed.httpUrl, { transports: ['sse'], token });
  const anonymous = client(authed.httpUrl, { transports: ['sse'], reconnect: { initialDelayMs: 60_000 } });
  try {
    const ok = c.subscribe('ok.*');
    await ok.ready;
    const denied = c.subscribe('secret.*');
    await assert.rejects(denied.ready, (e) => e.code === 'forbidden');
    await c.publish('ok.x', 1);
    assert.equal((await take(ok, 1))[0].data, 1);
    const refused = nextEvent(anonymous, 'error');
    anonymous.subscribe('ok.*');
    assert.equal((await refused).code, 'unauthorized');
  } finally {
    c.close();
    anonymous.close();
    await authed.stop();
  }
});
