// End-to-end tests of the client over WebSocket against a real broker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, TickwireError } from '../../dist/index.js';
import { startBroker, historyConfig, httpPublish } from './broker.mjs';
import { take, waitState, publishN, nextEvent } from './util.mjs';

let broker;
before(async () => {
  broker = await startBroker(['--config', historyConfig(), '--client-retain-patterns', 'retained.>']);
});
after(async () => {
  await broker?.stop();
});

function client(url = broker.wsUrl, options = {}) {
  return new Client(url, { WebSocket, transports: ['websocket'], ...options });
}

test('wildcard subscriptions each get every matching message once', async () => {
  const c = client();
  try {
    const star = c.subscribe('wc.*');
    const rest = c.subscribe('wc.>');
    const exact = c.subscribe('wc.a');
    await Promise.all([star.ready, rest.ready, exact.ready]);
    assert.equal(c.state, 'connected');
    assert.equal(c.transport, 'websocket');
    const before = Date.now() * 1000;
    await c.publish('wc.a', { px: 1.5, sym: 'A' });
    await c.publish('wc.a.deep', 'deep');
    const [s] = await take(star, 1);
    const [r1, r2] = await take(rest, 2);
    const [e] = await take(exact, 1);
    for (const m of [s, r1, e]) {
      assert.equal(m.topic, 'wc.a');
      assert.deepEqual(m.data, { px: 1.5, sym: 'A' });
      assert.equal(m.seq, 1);
      assert.match(m.epoch, /^\d+$/);
      assert.ok(m.time >= before - 5_000_000 && m.time < before + 60_000_000, `time ${m.time} is µs near now`);
      assert.ok(m.payload instanceof Uint8Array);
    }
    assert.equal(r2.topic, 'wc.a.deep');
    assert.equal(r2.data, 'deep');
    // Nothing more for the exact and `*` subscriptions: a PING-like barrier is
    // another acked publish that they match.
    await c.publish('wc.a', 2);
    assert.equal((await take(star, 1))[0].data, 2);
    assert.equal((await take(exact, 1))[0].data, 2);
  } finally {
    c.close();
  }
});

test('callbacks, decode modes and unsubscribe', async () => {
  const c = client();
  try {
    const got = [];
    const json = c.subscribe('dec.json', { decode: 'json' });
    const raw = c.subscribe('dec.raw', { decode: 'raw' });
    const delivered = new Promise((resolve) =>
      json.on('message', (m) => {
        got.push(m.data);
        if (got.length === 2) resolve();
      }),
    );
    await Promise.all([json.ready, raw.ready]);
    await c.publish('dec.json', new TextEncoder().encode('{"a":[1,2]}'));
    await c.publish('dec.json', new TextEncoder().encode('"s"'));
    await delivered;
    assert.deepEqual(got, [{ a: [1, 2] }, 's']);
    await c.publish('dec.raw', new Uint8Array([0xc1, 0xff]));
    const [m] = await take(raw, 1);
    assert.deepEqual([...m.data], [0xc1, 0xff]);
    raw.unsubscribe();
    assert.equal(raw.closed, true);
    const ended = await raw[Symbol.asyncIterator]().next();
    assert.equal(ended.done, true);
  } finally {
    c.close();
  }
});

test('acked publishes get consecutive seqs; fire-and-forget ones arrive in order', async () => {
  const c = client();
  try {
    const sub = c.subscribe('seq.t');
    await sub.ready;
    assert.deepEqual(await publishN(c, 'seq.t', 'acked', 3), [1, 2, 3]);
    for (let i = 0; i < 5; i++) c.publishNoAck('seq.t', i);
    const { seq } = await c.publish('seq.t', 'last');
    assert.equal(seq, 9);
    const got = await take(sub, 9);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(got.slice(3, 8).map((m) => m.data), [0, 1, 2, 3, 4]);
  } finally {
    c.close();
  }
});

test('broker errors carry their codes', async () => {
  const c = client();
  try {
    await waitState(c, 'connected');
    await assert.rejects(c.publish('bad.*', 1), (e) => e instanceof TickwireError && e.code === 'invalid_topic');
    await assert.rejects(c.publish('not.retainable', 1, { retain: true }), (e) => e instanceof TickwireError && e.code === 'invalid_option');
    const bad = c.subscribe('a.>.b');
    await assert.rejects(bad.ready, (e) => e.code === 'invalid_pattern');
    const dup = c.subscribe('dup.x', { maxRate: 2 });
    const other = c.subscribe('dup.x', { maxRate: 3 });
    await assert.rejects(other.ready, (e) => e.code === 'invalid_option');
    await dup.ready;
  } finally {
    c.close();
  }
});

test('retain, then last gives the retained value before live ones', async () => {
  const c = client();
  try {
    await waitState(c, 'connected');
    const { seq } = await c.publish('retained.px', { px: 10 }, { retain: true });
    const sub = c.subscribe('retained.*', { last: true });
    await sub.ready;
    const [snap] = await take(sub, 1);
    assert.equal(snap.seq, seq);
    assert.deepEqual(snap.data, { px: 10 });
    await c.publish('retained.px', { px: 11 });
    const [live] = await take(sub, 1);
    assert.equal(live.seq, seq + 1);
  } finally {
    c.close();
  }
});

test('maxRate conflates to the newest message', async () => {
  const c = client();
  try {
    const sub = c.subscribe('rate.t', { maxRate: 1 });
    await sub.ready;
    const seqs = await publishN(c, 'rate.t', 'burst', 50);
    const got = [];
    for await (const m of sub) {
      got.push(m.seq);
      if (m.seq === seqs.at(-1)) break;
    }
    assert.ok(got.length < 10, `conflated: got ${got.length} of 50 (${got})`);
    assert.equal(got.at(-1), 50, 'the newest one always arrives');
  } finally {
    c.close();
  }
});

test('HTTP publishes reach WebSocket subscribers', async () => {
  const c = client();
  try {
    const sub = c.subscribe('http.in');
    await sub.ready;
    const answer = await httpPublish(broker, 'http.in', new Uint8Array([0xa2, 0x68, 0x69]));
    assert.equal(answer.status, 200);
    const [m] = await take(sub, 1);
    assert.equal(m.data, 'hi');
  } finally {
    c.close();
  }
});

test('the iterator queue is bounded and drops the oldest', async () => {
  const c = client();
  try {
    const sub = c.subscribe('bound.t', { bufferSize: 3 });
    await sub.ready;
    await publishN(c, 'bound.t', 'x', 10);
    // A PING-equivalent barrier: this client's own acked publish on a topic it
    // subscribes to arrives after the ten before it.
    const barrier = c.subscribe('bound.barrier');
    await barrier.ready;
    await c.publish('bound.barrier', 0);
    await take(barrier, 1);
    assert.equal(sub.dropped, 7);
    assert.deepEqual((await take(sub, 3)).map((m) => m.seq), [8, 9, 10]);
  } finally {
    c.close();
  }
});

test('close ends subscriptions and fails later calls', async () => {
  const c = client();
  const sub = c.subscribe('close.t');
  await sub.ready;
  const ended = nextEvent(sub, 'end');
  c.close();
  await ended;
  assert.equal(c.state, 'closed');
  await assert.rejects(c.publish('close.t', 1), (e) => e.code === 'closed');
});
