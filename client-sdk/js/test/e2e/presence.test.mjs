// Presence against the real broker: presence() and presenceStats(),
// join/leave events in order with the messages over WebSocket, SSE and
// poll, and one client id across a reconnect, so that within the grace
// period the client stays one entry and nobody sees it leave and join.
// (No reconnect after close 4007 / 4500-4999 is tested against a scripted
// broker in test/unit/presence.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '../../dist/index.js';
import { startBroker, scratch, writeFile } from './broker.mjs';
import { startRelay } from './relay.mjs';
import { waitState, nextEvent } from './util.mjs';

let broker;
before(async () => {
  const config = writeFile(scratch(), 'presence.toml', '[[topic]]\npattern = "room.>"\npresence = true\n');
  // A grace period no test waits out.
  broker = await startBroker(['--config', config, '--presence-grace', '600s']);
});
after(async () => {
  await broker?.stop();
});

function client(url, options = {}) {
  return new Client(url, { WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
}

/** Records messages and join/leave events of `sub` in the order the callbacks saw them. */
function record(sub) {
  const seen = [];
  sub.on('message', (m) => seen.push(['message', m.data]));
  sub.on('join', (e) => seen.push(['join', e.client ?? e.user]));
  sub.on('leave', (e) => seen.push(['leave', e.client ?? e.user]));
  return seen;
}

/** Resolves once `sub` delivered a message whose data is `data`. */
function messageWith(sub, data) {
  return new Promise((resolve) => {
    const off = sub.on('message', (m) => {
      if (JSON.stringify(m.data) === JSON.stringify(data)) {
        off();
        resolve(m);
      }
    });
  });
}

test('presence lists and counts the subscribed clients; refusals', async () => {
  const alice = client(broker.wsUrl, { transports: ['websocket'], clientId: 'alice-tab' });
  const bob = client(broker.wsUrl, { transports: ['websocket'], clientId: 'bob-tab' });
  try {
    const subs = [alice.subscribe('room.list'), bob.subscribe('room.list'), bob.subscribe('room.*')];
    await Promise.all(subs.map((s) => s.ready));
    const room = await alice.presence('room.list');
    assert.equal(room.clients, 2);
    assert.equal(room.users, 0);
    assert.deepEqual(room.entries.map((e) => e.client).sort(), ['alice-tab', 'bob-tab']);
    assert.deepEqual(await bob.presenceStats('room.list'), { clients: 2, users: 0 });
    assert.deepEqual(await bob.presenceStats('room.none'), { clients: 0, users: 0 });
    await assert.rejects(alice.presence('lobby'), (e) => e.code === 'presence_disabled');
    await assert.rejects(alice.subscribe('lobby', { joinLeave: true }).ready, (e) => e.code === 'presence_disabled');
  } finally {
    alice.close();
    bob.close();
  }
});

test('WebSocket: joins and leaves arrive in order with the messages', async () => {
  const watcher = client(broker.wsUrl, { transports: ['websocket'], clientId: 'watcher' });
  const guest = client(broker.wsUrl, { transports: ['websocket'], clientId: 'guest' });
  try {
    const events = watcher.subscribe('room.ws', { joinLeave: true });
    const users = watcher.subscribe('room.*', { joinLeave: 'users' });
    await Promise.all([events.ready, users.ready]);
    const seen = record(events);
    const userEvents = [];
    users.on('join', (e) => userEvents.push(e));
    const seat = guest.subscribe('room.ws');
    await seat.ready;
    await guest.publish('room.ws', 'hello');
    seat.unsubscribe();
    const bye = messageWith(events, 'bye');
    await guest.publish('room.ws', 'bye');
    await bye;
    assert.deepEqual(seen.filter(([, who]) => who !== 'watcher'), [
      ['join', 'guest'],
      ['message', 'hello'],
      ['leave', 'guest'],
      ['message', 'bye'],
    ]);
    assert.deepEqual(userEvents, [], 'anonymous clients make no user-level events');
  } finally {
    watcher.close();
    guest.close();
  }
});

test('a reconnect within the grace period is the same entry and makes no events', async () => {
  const relay = await startRelay(broker.addr);
  const watcher = client(broker.wsUrl, { transports: ['websocket'], clientId: 'watcher2' });
  const guest = client(relay.wsUrl, { transports: ['websocket'] });
  try {
    const events = watcher.subscribe('room.grace', { joinLeave: true });
    await events.ready;
    const seen = record(events);
    const seat = guest.subscribe('room.grace');
    await seat.ready;
    const first = messageWith(events, 1);
    await guest.publish('room.grace', 1);
    await first;
    const down = waitState(guest, 'disconnected');
    relay.cut();
    await down;
    const renewed = nextEvent(seat, 'subscribed');
    relay.restore();
    await renewed;
    const second = messageWith(events, 2);
    await guest.publish('room.grace', 2);
    await second;
    assert.deepEqual(seen.filter(([, who]) => who !== 'watcher2'), [
      ['join', guest.clientId],
      ['message', 1],
      ['message', 2],
    ]);
    const room = await watcher.presence('room.grace');
    assert.deepEqual(room.entries.map((e) => e.client).sort(), [guest.clientId, 'watcher2'].sort());
  } finally {
    watcher.close();
    guest.close();
    await relay.stop();
  }
});

for (const kind of ['sse', 'poll']) {
  test(`${kind}: the client id goes with the stream, joins and leaves arrive in order with the messages`, async () => {
    const watcher = client(broker.httpUrl, { transports: [kind], clientId: `watcher-${kind}` });
    const guest = client(broker.wsUrl, { transports: ['websocket'], clientId: `guest-${kind}` });
    try {
      const topic = `room.${kind}`;
      const events = watcher.subscribe(topic, { joinLeave: 'clients' });
      await events.ready;
      assert.equal(watcher.transport, kind);
      const seen = record(events);
      const here = await guest.presence(topic);
      assert.deepEqual(here.entries.map((e) => e.client), [`watcher-${kind}`]);
      const seat = guest.subscribe(topic);
      await seat.ready;
      await guest.publish(topic, 'hello');
      seat.unsubscribe();
      const bye = messageWith(events, 'bye');
      await guest.publish(topic, 'bye');
      await bye;
      assert.deepEqual(seen.filter(([, who]) => who !== `watcher-${kind}`), [
        ['join', `guest-${kind}`],
        ['message', 'hello'],
        ['leave', `guest-${kind}`],
        ['message', 'bye'],
      ]);
    } finally {
      watcher.close();
      guest.close();
    }
  });
}
