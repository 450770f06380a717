// Reconnects and resume over WebSocket: a cut connection resumes gaplessly
// from the positions the client tracked (`since`), and a broker restart on
// the same port is reported (new epoch) and followed without duplicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '../../dist/index.js';
import { startBroker, historyConfig } from './broker.mjs';
import { startRelay } from './relay.mjs';
import { take, waitState, publishN, nextEvent } from './util.mjs';

function client(url, options = {}) {
  return new Client(url, { WebSocket, transports: ['websocket'], reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
}

test('a cut connection resumes without gap or duplicate; a broker restart is reported and followed', async () => {
  const config = historyConfig();
  let broker = await startBroker(['--config', config]);
  const relay = await startRelay(broker.addr);
  const publisher = client(broker.wsUrl);
  const subscriber = client(relay.wsUrl);
  try {
    const sub = subscriber.subscribe('iot.>');
    const exact = subscriber.subscribe('iot.s1');
    await Promise.all([sub.ready, exact.ready]);
    await publishN(publisher, 'iot.s1', 'before', 3);
    assert.deepEqual((await take(sub, 3)).map((m) => m.seq), [1, 2, 3]);
    assert.deepEqual((await take(exact, 3)).map((m) => m.seq), [1, 2, 3]);

    // Cut: publishes while the subscriber is away are replayed on resume.
    const down = waitState(subscriber, 'disconnected');
    relay.cut();
    await down;
    await publishN(publisher, 'iot.s1', 'missed', 50);
    await publishN(publisher, 'iot.s2', 'new topic', 2);
    const renewed = nextEvent(sub, 'subscribed');
    relay.restore();
    const info = await renewed;
    assert.equal(info.recovered, true);
    const replay = await take(sub, 52);
    assert.deepEqual(
      replay.filter((m) => m.topic === 'iot.s1').map((m) => m.seq),
      Array.from({ length: 50 }, (_, i) => i + 4),
      'exactly the messages published while disconnected, in order',
    );
    assert.deepEqual(replay.filter((m) => m.topic === 'iot.s2').map((m) => m.seq), [1, 2]);
    assert.deepEqual((await take(exact, 50)).map((m) => m.seq), Array.from({ length: 50 }, (_, i) => i + 4));
    // No duplicate: the next live message comes right after.
    await publisher.publish('iot.s1', 'live');
    assert.equal((await take(sub, 1))[0].seq, 54);
    assert.equal((await take(exact, 1))[0].seq, 54);

    // Restart on the same port: the history is gone, the client says so
    // (recovered false, the new epoch in missed) and goes on.
    const oldEpoch = replay[0].epoch;
    const lost = waitState(subscriber, 'disconnected');
    await broker.stop();
    await lost;
    relay.cut();
    broker = await startBroker(['--config', config], broker.port);
    const renewedAgain = nextEvent(exact, 'subscribed');
    relay.restore();
    const after = await renewedAgain;
    assert.equal(after.recovered, false);
    assert.equal(after.missed['iot.s1'][1], 0);
    assert.notEqual(after.missed['iot.s1'][0], oldEpoch, 'a new epoch');
    await waitState(publisher, 'connected');
    await publishN(publisher, 'iot.s1', 'fresh', 2);
    const fresh = await take(exact, 2);
    assert.deepEqual(fresh.map((m) => m.seq), [1, 2]);
    assert.notEqual(fresh[0].epoch, oldEpoch);
    assert.deepEqual((await take(sub, 2)).map((m) => [m.topic, m.seq]), [['iot.s1', 1], ['iot.s1', 2]]);
  } finally {
    publisher.close();
    subscriber.close();
    await relay.stop();
    await broker.stop();
  }
});

test('a subscription made while disconnected and a publish buffered offline complete on reconnect', async () => {
  const broker = await startBroker([]);
  const relay = await startRelay(broker.addr);
  const c = client(relay.wsUrl);
  try {
    await waitState(c, 'connected');
    const down = waitState(c, 'disconnected');
    relay.cut();
    await down;
    const sub = c.subscribe('offline.t');
    const published = c.publish('offline.t', 'queued');
    relay.restore();
    await sub.ready;
    assert.equal((await published).seq, 1);
    const [m] = await take(sub, 1);
    assert.equal(m.data, 'queued');
  } finally {
    c.close();
    await relay.stop();
    await broker.stop();
  }
});
