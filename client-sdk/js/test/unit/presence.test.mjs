// Presence in the client: the wire format of PRESENCE, PRESENCE_INFO, JOIN
// and LEAVE (contract of issue 15, protocol.md), the client id sent on every
// connection, join/leave routing to subscriptions in order with messages,
// and which close codes end the client for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { decode, encode } from '@msgpack/msgpack';
import { decodeServerMessage, encodePresence, encodeSubscribe } from '../../dist/codec.js';
import { errorCodeName, isFinalClose } from '../../dist/errors.js';
import { Client, generateClientId } from '../../dist/index.js';
import { presenceEntryJson, streamQuery } from '../../dist/transports/streams.js';
import { startFake } from './fake-broker.mjs';

const toHex = (u) => [...u].map((b) => b.toString(16).padStart(2, '0')).join(' ');

test('PRESENCE encodes as [7, id, topic] and [7, id, topic, {counts: true}]', () => {
  assert.deepEqual(decode(encodePresence(5, 'room.1', false)), [7, 5, 'room.1']);
  assert.deepEqual(decode(encodePresence(6, 'room.1', true)), [7, 6, 'room.1', { counts: true }]);
  assert.equal(toHex(encodePresence(1, 'r', true)), '94 07 01 a1 72 81 a6 63 6f 75 6e 74 73 c3');
});

test('SUBSCRIBE carries join_leave as "clients" or "users"', () => {
  assert.deepEqual(decode(encodeSubscribe(1, 'room.1', { joinLeave: 'clients' })), [1, 1, 'room.1', { join_leave: 'clients' }]);
  assert.deepEqual(decode(encodeSubscribe(2, 'room.*', { joinLeave: 'users' })), [1, 2, 'room.*', { join_leave: 'users' }]);
  assert.deepEqual(decode(encodeSubscribe(3, 'room.1', {})), [1, 3, 'room.1', {}]);
});

test('PRESENCE_INFO, JOIN and LEAVE decode; SUBSCRIBED carries the client id', () => {
  const info = { clients: 2, users: 1, entries: [{ client: 'c1', user: 'alice', info: { name: 'Alice' } }, { client: 'c2' }] };
  assert.deepEqual(decodeServerMessage(encode([18, 9, info])), { type: 'presence', id: 9, info });
  assert.deepEqual(decodeServerMessage(encode([18, 10, { clients: 3, users: 2 }])), { type: 'presence', id: 10, info: { clients: 3, users: 2 } });
  assert.deepEqual(decodeServerMessage(encode([19, 'room.1', { client: 'c1', user: 'alice' }])), { type: 'join', topic: 'room.1', entry: { client: 'c1', user: 'alice' } });
  assert.deepEqual(decodeServerMessage(encode([20, 'room.1', { user: 'alice', info: [1, 2] }])), { type: 'leave', topic: 'room.1', entry: { user: 'alice', info: [1, 2] } });
  assert.deepEqual(decodeServerMessage(encode([11, 1, { epoch: 3, seq: 0, client: 'c1' }])).info, { epoch: '3', seq: 0, client: 'c1' });
  assert.throws(() => decodeServerMessage(encode([18, 1, { clients: 'x', users: 0 }])));
  assert.throws(() => decodeServerMessage(encode([19, 'room.1', 'not a map'])));
  assert.equal(errorCodeName(17), 'presence_full');
  assert.equal(errorCodeName(18), 'presence_disabled');
});

test('presence entries in JSON: info as JSON or info_base64', () => {
  assert.deepEqual(presenceEntryJson({ topic: 't', client: 'c', user: 'u', info: { a: 1 } }), { client: 'c', user: 'u', info: { a: 1 } });
  const b64 = Buffer.from(encode({ a: 1 })).toString('base64');
  assert.deepEqual(presenceEntryJson({ client: 'c', info_base64: b64 }), { client: 'c', info: { a: 1 } });
});

test('close codes: 4007 and 4500-4999 are final, 4100-4499 and the rest reconnect', () => {
  for (const code of [4007, 4500, 4750, 4999]) assert.ok(isFinalClose(code), String(code));
  for (const code of [1000, 1001, 4001, 4003, 4006, 4008, 4100, 4300, 4499, 5000, undefined]) assert.ok(!isFinalClose(code), String(code));
});

test('client ids: generated per client (22 base64url chars), or given and checked', () => {
  const a = generateClientId();
  assert.match(a, /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(a, generateClientId());
  const fake = { WebSocket, transports: ['websocket'] };
  const c = new Client('ws://127.0.0.1:9/ws', { ...fake, clientId: 'tab-1_A', reconnect: { initialDelayMs: 60_000 } });
  assert.equal(c.clientId, 'tab-1_A');
  c.close();
  for (const bad of ['', 'has space', 'x'.repeat(65), 'é']) {
    assert.throws(() => new Client('ws://127.0.0.1:9/ws', { ...fake, clientId: bad }), (e) => e.code === 'invalid_option', bad);
  }
});

test('stream queries carry join_leave and the client id', () => {
  const sub = { pattern: 'room.1', last: false, maxRate: undefined, joinLeave: 'users', everConfirmed: false, rawPayload: false, since: () => undefined };
  const q = new URLSearchParams(streamQuery([sub], 'jwt', [['client', 'c1']]));
  assert.equal(q.get('join_leave'), 'users');
  assert.equal(q.get('client'), 'c1');
  assert.equal(q.get('token'), 'jwt');
});

async function server() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (protocols) => (protocols.has('tickwire.v1') ? 'tickwire.v1' : false) });
  await once(wss, 'listening');
  return { wss, url: `ws://127.0.0.1:${wss.address().port}/ws` };
}

/** The next connection, with its requests buffered (several may arrive in one chunk). */
function nextConnection(wss) {
  return once(wss, 'connection').then(([socket, req]) => {
    const queue = [];
    const waiters = [];
    socket.on('message', (data) => {
      const w = waiters.shift();
      if (w) w(decode(data));
      else queue.push(decode(data));
    });
    socket.next = () => (queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiters.push(resolve)));
    return { socket, req };
  });
}
const nextRequest = (socket) => socket.next();

test('WebSocket: the same client id on every connection; join/leave in order with messages; presence requests', async () => {
  const { wss, url } = await server();
  const c = new Client(url, { WebSocket, transports: ['websocket'], reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  try {
    let { socket, req } = await nextConnection(wss);
    const first = new URL(req.url, 'http://x').searchParams.get('client');
    assert.equal(first, c.clientId);
    const seen = [];
    const sub = c.subscribe('room.1', { joinLeave: true, onJoin: (e) => seen.push(['join', e]) });
    sub.on('message', (m) => seen.push(['message', m.data]));
    sub.on('leave', (e) => seen.push(['leave', e]));
    const users = c.subscribe('room.*', { joinLeave: 'users' });
    users.on('join', (e) => seen.push(['user-join', e]));
    const [s1, s2] = [await nextRequest(socket), await nextRequest(socket)];
    assert.deepEqual(s1, [1, s1[1], 'room.1', { join_leave: 'clients' }]);
    assert.deepEqual(s2, [1, s2[1], 'room.*', { join_leave: 'users' }]);
    socket.send(encode([11, s1[1], { epoch: 1, seq: 0, client: c.clientId }]));
    socket.send(encode([11, s2[1], {}]));
    await Promise.all([sub.ready, users.ready]);
    socket.send(encode([19, 'room.1', { client: 'b', user: 'bob' }]));
    socket.send(encode([19, 'room.1', { user: 'bob' }]));
    socket.send(encode([16, 'room.1', 1, 1, 1, new Uint8Array(encode('hi'))]));
    socket.send(encode([20, 'room.1', { client: 'b', user: 'bob' }]));
    socket.send(encode([19, 'other.topic', { client: 'x' }]));
    const p = c.presence('room.1');
    const [pr] = [await nextRequest(socket)];
    assert.deepEqual(pr, [7, pr[1], 'room.1']);
    socket.send(encode([18, pr[1], { clients: 1, users: 1, entries: [{ client: c.clientId, user: 'me' }] }]));
    assert.deepEqual(await p, { clients: 1, users: 1, entries: [{ client: c.clientId, user: 'me' }] });
    assert.deepEqual(seen, [
      ['join', { topic: 'room.1', client: 'b', user: 'bob' }],
      ['user-join', { topic: 'room.1', user: 'bob' }],
      ['message', 'hi'],
      ['leave', { topic: 'room.1', client: 'b', user: 'bob' }],
    ]);
    const stats = c.presenceStats('room.1');
    const [st] = [await nextRequest(socket)];
    assert.deepEqual(st, [7, st[1], 'room.1', { counts: true }]);
    socket.send(encode([15, st[1], 18, 'topic room.1 has no presence']));
    await assert.rejects(stats, (e) => e.code === 'presence_disabled');
    await assert.rejects(c.presence('room.*'), (e) => e.code === 'invalid_topic');
    // A second subscription of a pattern must ask for the same events.
    const other = c.subscribe('room.1');
    await assert.rejects(other.ready, (e) => e.code === 'invalid_option');
    await assert.rejects(c.subscribe('x', { joinLeave: 'everyone' }).ready, (e) => e.code === 'invalid_option');
    // 4100-4499: reconnect with the same client id.
    const again = nextConnection(wss);
    socket.close(4100, 'moved');
    ({ socket, req } = await again);
    assert.equal(new URL(req.url, 'http://x').searchParams.get('client'), first);
  } finally {
    c.close();
    wss.close();
  }
});

for (const code of [4007, 4500, 4999]) {
  test(`WebSocket: close ${code} closes the client for good (no reconnect)`, async () => {
    const { wss, url } = await server();
    const c = new Client(url, { WebSocket, transports: ['websocket'], reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    let connections = 0;
    wss.on('connection', (_, req) => {
      if (new URL(req.url, 'http://x').searchParams.get('client') === c.clientId) connections++;
    });
    try {
      const { socket } = await nextConnection(wss);
      const sub = c.subscribe('t');
      const [s] = [await nextRequest(socket)];
      socket.send(encode([11, s[1], {}]));
      await sub.ready;
      const ended = new Promise((resolve) => sub.on('end', (e) => resolve([e])));
      const closed = new Promise((resolve) => c.on('state', (state, info) => state === 'closed' && resolve(info)));
      socket.close(code, 'disconnected by the server');
      const info = await closed;
      assert.equal(info.error.code, 'disconnected');
      assert.equal(info.error.status, code);
      const [why] = await ended;
      assert.equal(why.code, 'disconnected');
      await assert.rejects(c.publish('t', 1), (e) => e.code === 'closed');
      // Give a (wrong) reconnect, 1 ms later, every chance to happen: a fresh client connects meanwhile.
      const probe = new Client(url, { WebSocket, transports: ['websocket'] });
      await once(wss, 'connection');
      probe.close();
      assert.equal(connections, 1, 'the closed client did not reconnect');
    } finally {
      c.close();
      wss.close();
    }
  });
}

test('SSE and poll: client id on every request, join/leave events, final close codes', async () => {
  for (const kind of ['sse', 'poll']) {
    const fake = await startFake();
    try {
      const c = new Client(fake.base, { transports: [kind], clientId: `id-${kind}`, reconnect: { initialDelayMs: 1, maxDelayMs: 1 }, pollTimeoutS: 1 });
      const seen = [];
      const sub = c.subscribe('room.1', { joinLeave: true, onJoin: (e) => seen.push(['join', e]), onLeave: (e) => seen.push(['leave', e]) });
      await sub.ready;
      const request = fake.requests.findLast((r) => r.path === `/v1/${kind}`);
      assert.equal(request.query.get('client'), `id-${kind}`);
      assert.equal(request.query.get('join_leave'), 'clients');
      fake.presence('join', { topic: 'room.1', client: 'b', user: 'bob', info: { n: 1 } });
      fake.presence('leave', { topic: 'room.1', client: 'b', user: 'bob' });
      await new Promise((resolve) => sub.on('leave', resolve));
      assert.deepEqual(seen, [
        ['join', { topic: 'room.1', client: 'b', user: 'bob', info: { n: 1 } }],
        ['leave', { topic: 'room.1', client: 'b', user: 'bob' }],
      ]);
      const closed = new Promise((resolve) => c.on('state', (state, info) => state === 'closed' && resolve(info)));
      fake.close(4007, 'disconnected by the server');
      const info = await closed;
      assert.equal(info.error.code, 'disconnected', kind);
      c.close();
    } finally {
      await fake.stop();
    }
  }
});

test('SSE and poll ask presence from the server API with the token as bearer', async () => {
  const fake = await startFake();
  const c = new Client(fake.base, { transports: ['sse'], token: 'admin-token' });
  try {
    await waitConnected(c);
    const room = await c.presence('room.1');
    assert.deepEqual(room, {
      clients: 2,
      users: 1,
      entries: [
        { client: 'c1', user: 'alice', info: { name: 'Alice' } },
        { client: 'c2', info: { n: 1 } },
      ],
    });
    const request = fake.requests.findLast((r) => r.path === '/v1/presence/room.1');
    assert.equal(request.headers.authorization, 'Bearer admin-token');
    assert.deepEqual(await c.presenceStats('room.1'), { clients: 2, users: 1 });
    await assert.rejects(c.presence('room.2'), (e) => e.code === 'presence_disabled' && e.status === 404);
  } finally {
    c.close();
    await fake.stop();
  }
});

function waitConnected(c) {
  return new Promise((resolve) => {
    if (c.state === 'connected') resolve();
    else c.on('state', (s) => s === 'connected' && resolve());
  });
}
