// The WebSocket transport against a scripted server (the `ws` package's
// WebSocketServer on loopback): keepalive, odd broker messages, close codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { decode, encode } from '@msgpack/msgpack';
import { Client } from '../../dist/index.js';

async function server() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (protocols) => (protocols.has('tickwire.v1') ? 'tickwire.v1' : false) });
  await once(wss, 'listening');
  return { wss, url: `ws://127.0.0.1:${wss.address().port}/ws` };
}

function nextConnection(wss) {
  return once(wss, 'connection').then(([socket, req]) => ({ socket, req }));
}

test('a silent broker is probed with PING and dropped when nothing answers', async () => {
  const { wss, url } = await server();
  const c = new Client(url, { WebSocket, transports: ['websocket'], keepalive: { idleMs: 100, timeoutMs: 100 }, reconnect: { initialDelayMs: 60_000 } });
  try {
    const { socket } = await nextConnection(wss);
    const [ping] = await once(socket, 'message');
    const [type] = decode(ping);
    assert.equal(type, 4, 'an application PING');
    const down = await new Promise((resolve) => c.on('state', (s, info) => s === 'disconnected' && resolve(info)));
    assert.equal(down.error.code, 'timeout');
  } finally {
    c.close();
    wss.close();
  }
});

test('a PONG keeps the connection; unknown types are ignored; ERROR without id is reported', async () => {
  const { wss, url } = await server();
  const c = new Client(url, { WebSocket, transports: ['websocket'], keepalive: { idleMs: 100, timeoutMs: 1000 } });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  try {
    const { socket, req } = await nextConnection(wss);
    assert.equal(req.headers['sec-websocket-protocol'], 'tickwire.v1');
    const [ping] = await once(socket, 'message');
    const [, id] = decode(ping);
    socket.send(encode([99, 'from a newer broker']));
    socket.send(encode([14, id]));
    socket.send(encode([15, null, 1, 'malformed']));
    socket.send('text is not protocol');
    const [second] = await once(socket, 'message');
    assert.equal(decode(second)[0], 4, 'probed again after the next silence, not dropped');
    assert.equal(c.state, 'connected');
    assert.deepEqual(errors.map((e) => e.code), ['malformed', 'protocol']);
  } finally {
    c.close();
    wss.close();
  }
});

test('a broker close reconnects, renews subscriptions, and fails pending publishes as transport', async () => {
  const { wss, url } = await server();
  const c = new Client(url, { WebSocket, transports: ['websocket'], reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  try {
    const sub = c.subscribe('t.*');
    let { socket } = await nextConnection(wss);
    let [req] = await once(socket, 'message');
    assert.deepEqual(decode(req), [1, 1, 't.*', {}]);
    socket.send(encode([11, 1, {}]));
    await sub.ready;
    socket.send(encode([16, 't.a', 2n ** 63n + 5n, 7, 1_700_000_000_000_000, new Uint8Array(encode('x'))], { useBigInt64: true }));
    const [m] = await new Promise((resolve) => sub.on('message', (...a) => resolve(a)));
    assert.deepEqual([m.topic, m.epoch, m.seq, m.data], ['t.a', '9223372036854775813', 7, 'x']);
    const pending = c.publish('t.a', 1);
    await once(socket, 'message');
    const reconnected = nextConnection(wss);
    socket.close(4001, 'slow consumer');
    await assert.rejects(pending, (e) => e.code === 'transport');
    ({ socket } = await reconnected);
    [req] = await once(socket, 'message');
    const renewal = decode(req, { useBigInt64: true });
    assert.equal(renewal[2], 't.*');
    assert.deepEqual(renewal[3], { since: { 't.a': [2n ** 63n + 5n, 7] } }, 'resumes from the tracked position');
  } finally {
    c.close();
    wss.close();
  }
});
