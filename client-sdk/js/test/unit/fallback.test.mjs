// The SSE and long-poll transports and the fallback, against a fake of the
// broker's HTTP side built from the transports contract.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '../../dist/index.js';
import { startFake } from './fake-broker.mjs';

function next(sub, n) {
  const it = sub[Symbol.asyncIterator]();
  return Promise.all(Array.from({ length: n }, () => it.next().then((r) => r.value)));
}

function waitFor(predicate) {
  return new Promise((resolve) => {
    const check = () => (predicate() ? resolve() : setImmediate(check));
    check();
  });
}

for (const kind of ['sse', 'poll']) {
  test(`${kind}: WebSocket refused, the client falls back and receives, publishes over HTTP`, async () => {
    const fake = await startFake();
    const order = kind === 'sse' ? ['websocket', 'sse', 'poll'] : ['websocket', 'poll'];
    const c = new Client(`${fake.base}`, { WebSocket, transports: order, token: 'tok', pollTimeoutS: 5 });
    try {
      const sub = c.subscribe('fx.*');
      await sub.ready;
      assert.equal(c.transport, kind);
      assert.ok(fake.requests.some((r) => r.path === '/ws'), 'WebSocket was tried first');
      const stream = fake.requests.find((r) => r.path === `/v1/${kind}`);
      assert.deepEqual(stream.query.getAll('sub'), ['fx.*']);
      assert.equal(stream.query.get('token'), 'tok');
      assert.equal(fake.cursorOf(stream), null, 'a new subscription has no cursor');

      const { seq } = await c.publish('fx.a', { px: 1 }, { retain: true });
      assert.equal(seq, 1);
      const post = fake.requests.find((r) => r.method === 'POST');
      assert.equal(post.path, '/v1/publish/fx.a');
      assert.equal(post.query.get('retain'), 'true');
      assert.equal(post.headers.authorization, 'Bearer tok');
      const [m] = await next(sub, 1);
      assert.deepEqual([m.topic, m.epoch, m.seq, m.data], ['fx.a', '77', 1, { px: 1 }]);
      if (kind === 'poll') {
        // Every later poll names the session and carries the cursor, so an expired session resumes.
        await waitFor(() => fake.requests.some((r) => r.query.get('session') === 'f00d' && fake.cursorOf(r)?.['fx.a']?.[1] === 1));
      }

      // Adding a subscription restarts the stream with a cursor of tracked positions.
      const before = fake.requests.length;
      const more = c.subscribe('fy.>', { decode: 'raw' });
      await more.ready;
      const restarted = fake.requests.slice(before).find((r) => r.path === `/v1/${kind}` && r.query.getAll('sub').includes('fy.>'));
      assert.equal(restarted.query.get('session'), null, 'a new poll session');
      assert.deepEqual(restarted.query.getAll('sub').sort(), ['fx.*', 'fy.>']);
      assert.deepEqual(fake.cursorOf(restarted), { 'fx.a': ['77', 1] });
      assert.equal(restarted.query.get('payload'), 'base64', 'a raw subscription needs the exact bytes');
      fake.deliver({ topic: 'fx.a', epoch: '77', seq: 1, time: 1, data: { px: 1 } });
      fake.deliver({ topic: 'fx.a', epoch: '77', seq: 2, time: 1, data: { px: 2 } });
      fake.deliver({ topic: 'fy.b.c', epoch: '5', seq: 9, time: 1, data_base64: 'AQI=' });
      const [dup] = await next(sub, 1);
      assert.equal(dup.seq, 2, 'a replayed duplicate is dropped');
      const [raw] = await next(more, 1);
      assert.deepEqual([...raw.data], [1, 2]);
    } finally {
      c.close();
      await fake.stop();
    }
  });
}

test('sse: a refused new subscription fails alone; the others carry on', async () => {
  const fake = await startFake();
  const c = new Client(fake.base, { transports: ['sse'] });
  try {
    const ok = c.subscribe('ok.*');
    await ok.ready;
    fake.refuseNext(403, 'forbidden');
    const denied = c.subscribe('secret.*');
    await assert.rejects(denied.ready, (e) => e.code === 'forbidden');
    await waitFor(() => fake.requests.filter((r) => r.path === '/v1/sse').length === 3);
    const last = fake.requests.filter((r) => r.path === '/v1/sse').at(-1);
    assert.deepEqual(last.query.getAll('sub'), ['ok.*']);
    fake.deliver({ topic: 'ok.x', epoch: '1', seq: 1, time: 1, data: 'still' });
    assert.equal((await next(ok, 1))[0].data, 'still');
  } finally {
    c.close();
    await fake.stop();
  }
});

test('sse: a closed stream reconnects and resumes from the tracked cursor', async () => {
  const fake = await startFake();
  const c = new Client(fake.base, { transports: ['sse'], reconnect: { initialDelayMs: 10 } });
  const states = [];
  c.on('state', (s) => states.push(s));
  try {
    const sub = c.subscribe('r.*');
    await sub.ready;
    fake.deliver({ topic: 'r.a', epoch: '3', seq: 4, time: 1, data: 1 });
    await next(sub, 1);
    const renewed = new Promise((resolve) => sub.on('subscribed', resolve));
    fake.closeStreams(4001, 'slow consumer');
    assert.deepEqual(await renewed, { recovered: true });
    const last = fake.requests.filter((r) => r.path === '/v1/sse').at(-1);
    assert.deepEqual(fake.cursorOf(last), { 'r.a': ['3', 4] });
    assert.deepEqual(states, ['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
  } finally {
    c.close();
    await fake.stop();
  }
});

test('an unauthorized stream is reported with the broker code', async () => {
  const fake = await startFake();
  const c = new Client(fake.base, { transports: ['poll'], reconnect: { initialDelayMs: 60_000 } });
  try {
    fake.refuseNext(401, 'unauthorized');
    const errored = new Promise((resolve) => c.on('error', resolve));
    c.subscribe('a.b');
    const e = await errored;
    assert.equal(e.code, 'unauthorized');
    assert.equal(e.status, 401);
  } finally {
    c.close();
    await fake.stop();
  }
});

test('sse: a token provider is asked again before expiry and the stream restarts with the new token', async () => {
  const fake = await startFake();
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  let calls = 0;
  const token = () => `${b64({ alg: 'HS256' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 1, n: ++calls })}.sig`;
  const c = new Client(fake.base, { transports: ['sse'], token });
  try {
    const sub = c.subscribe('tok.*');
    await sub.ready;
    const renewed = new Promise((resolve) => sub.on('subscribed', resolve));
    await renewed;
    const tokens = fake.requests.filter((r) => r.path === '/v1/sse').map((r) => JSON.parse(Buffer.from(r.query.get('token').split('.')[1], 'base64url')).n);
    assert.deepEqual(tokens, [1, 2]);
    assert.equal(c.state, 'connected');
  } finally {
    c.close();
    await fake.stop();
  }
});

test('a failing token provider is reported and retried with backoff', async () => {
  const fake = await startFake();
  let calls = 0;
  const c = new Client(fake.base, {
    transports: ['poll'],
    reconnect: { initialDelayMs: 1, maxDelayMs: 1 },
    token: () => {
      calls++;
      if (calls === 1) throw new Error('identity provider down');
      return 'tok';
    },
  });
  try {
    const error = await new Promise((resolve) => c.on('error', resolve));
    assert.equal(error.code, 'unauthorized');
    assert.match(error.message, /identity provider down/);
    await new Promise((resolve) => c.on('state', (s) => s === 'connected' && resolve()));
    assert.equal(calls, 2);
  } finally {
    c.close();
    await fake.stop();
  }
});

test('sse: among several new subscriptions, only the forbidden one is refused', async () => {
  const fake = await startFake();
  fake.forbid('secret.*');
  const c = new Client(fake.base, { transports: ['sse'] });
  try {
    const ok = c.subscribe('ok.*');
    const denied = c.subscribe('secret.*');
    const also = c.subscribe('also.>');
    await assert.rejects(denied.ready, (e) => e.code === 'forbidden' && e.status === 403);
    await Promise.all([ok.ready, also.ready]);
    assert.equal(c.state, 'connected');
    fake.deliver({ topic: 'also.x', epoch: '1', seq: 1, time: 1, data: 'fine' });
    assert.equal((await next(also, 1))[0].data, 'fine');
  } finally {
    c.close();
    await fake.stop();
  }
});
