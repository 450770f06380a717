// Authentication: a token on the upgrade (`?token=`), grants enforced with
// the broker's `forbidden` code, and REFRESH before expiry with a provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client, TickwireError } from '../../dist/index.js';
import { startBroker, scratch, writeFile, tickwire } from './broker.mjs';
import { take, waitState } from './util.mjs';

let broker;
let secret;
before(async () => {
  secret = writeFile(scratch(), 'secret', 'a-test-secret-of-at-least-32-bytes-long\n');
  broker = await startBroker(['--jwt-hmac-secret-file', secret]);
});
after(async () => {
  await broker?.stop();
});

function mint(ttl = '1h') {
  return tickwire(['token', '--hmac-secret-file', secret, '--sub', 'auth.ok.>', '--pub', 'auth.ok.>', '--ttl', ttl]);
}

test('a token grants what it names; the rest is forbidden', async () => {
  const c = new Client(broker.wsUrl, { WebSocket, transports: ['websocket'], token: mint() });
  try {
    const ok = c.subscribe('auth.ok.*');
    await ok.ready;
    const denied = c.subscribe('auth.>');
    await assert.rejects(denied.ready, (e) => e instanceof TickwireError && e.code === 'forbidden');
    await assert.rejects(c.publish('auth.no', 1), (e) => e instanceof TickwireError && e.code === 'forbidden');
    await c.publish('auth.ok.x', 'yes');
    assert.equal((await take(ok, 1))[0].data, 'yes');
  } finally {
    c.close();
  }
});

test('without a token the WebSocket upgrade is refused', async () => {
  const c = new Client(broker.wsUrl, { WebSocket, transports: ['websocket'], reconnect: { initialDelayMs: 10_000 } });
  try {
    const info = await waitState(c, 'disconnected');
    assert.equal(info.error.code, 'transport');
  } finally {
    c.close();
  }
});

test('a token provider is asked again before expiry and the connection is refreshed in place', async () => {
  let calls = 0;
  let refreshed;
  const twice = new Promise((resolve) => (refreshed = resolve));
  const c = new Client(broker.wsUrl, {
    WebSocket,
    transports: ['websocket'],
    token: () => {
      calls++;
      if (calls === 3) refreshed();
      return mint('2s');
    },
  });
  const states = [];
  c.on('state', (s) => states.push(s));
  const errors = [];
  c.on('error', (e) => errors.push(e));
  try {
    const sub = c.subscribe('auth.ok.refresh');
    await sub.ready;
    // The third call is made only once the second token was accepted (REFRESHED).
    await twice;
    assert.deepEqual(states, ['connecting', 'connected'], 'no reconnect');
    assert.deepEqual(errors, []);
    await c.publish('auth.ok.refresh', 1);
    assert.equal((await take(sub, 1))[0].data, 1);
  } finally {
    c.close();
  }
});
