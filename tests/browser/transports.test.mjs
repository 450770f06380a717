// The JS client's fallbacks in a real Chromium: with WebSocket blocked the
// dashboard's client falls back to SSE, with SSE blocked too to long-poll,
// and receives everything in order; SSE and long-poll deliver exactly what
// a WebSocket subscriber receives.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  WAIT_MS, configFile, launch, newPage, openDashboard, publishJson, range, startBroker,
  tailPattern, tailSeqs, waitConnected, waitInPage, waitTail,
} from './lib.mjs';

let browser;
before(async () => { browser = await launch(); });

after(async () => { await browser?.close(); });

/** Makes every WebSocket to /ws of `page` fail before it opens (as a proxy that refuses upgrades would). */
async function blockWebSocket(page) {
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => ws.close({ code: 1008, reason: 'blocked by the test' }));
}

/** Makes every SSE request of `page` fail. */
async function blockSse(page) {
  await page.route(/\/v1\/sse(\?|$)/, (route) => route.abort('blockedbyclient'));
}

test('with WebSocket blocked the client falls back to SSE, then to long-poll, and receives everything in order', async () => {
  // History for fb.>: the topic published after the restart is new to the
  // client, so it is replayed from its start whenever the client is back.
  const config = configFile('[[topic]]\npattern = "fb.>"\nhistory_messages = 1000\n');
  let broker = await startBroker({ args: ['--config', config] });
  const port = broker.port;
  try {
    const page = await newPage(browser);
    await blockWebSocket(page);
    await page.goto(`${broker.base}/dashboard`);
    await waitConnected(page, 'sse');
    await tailPattern(page, 'fb.>');
    await publishJson(broker, 'fb.sse', range(1, 100).map((n) => ({ n })));
    await waitTail(page, 'fb.sse', 100);

    // SSE blocked too; the restart cuts the running stream.
    await blockSse(page);
    await broker.stop();
    await waitInPage(page, () => window.tickwireDashboard.client.state !== 'connected');
    broker = await startBroker({ port, args: ['--config', config] });
    await publishJson(broker, 'fb.poll', range(1, 100).map((n) => ({ n })));
    await waitConnected(page, 'poll');
    await waitTail(page, 'fb.poll', 100);
    await publishJson(broker, 'fb.poll', range(101, 150).map((n) => ({ n })));
    await waitTail(page, 'fb.poll', 150);

    assert.deepEqual(await tailSeqs(page, 'fb.sse'), range(1, 100));
    assert.deepEqual(await tailSeqs(page, 'fb.poll'), range(1, 150));
    const transports = await page.evaluate(() => window.tickwireDashboard.states.filter((s) => s.state === 'connected').map((s) => s.transport));
    assert.deepEqual([...new Set(transports)], ['sse', 'poll']);
    assert.deepEqual(page.errors, []);
  } finally {
    await broker.stop();
  }
});

test('SSE and long-poll deliver exactly what a WebSocket subscriber receives', async () => {
  const broker = await startBroker();
  try {
    const page = await openDashboard(browser, broker);
    // Three clients of the page's bundle, one per forced transport, on the
    // same patterns (one wildcard, one exact).
    await page.evaluate(async (waitMs) => {
      const { Client } = await import('/dashboard/tickwire-client.js');
      const url = `ws://${location.host}/ws`;
      window.compare = {};
      const ready = [];
      for (const transport of ['websocket', 'sse', 'poll']) {
        const client = new Client(url, { transports: [transport] });
        const got = [];
        for (const pattern of ['cmp.*', 'exact.one']) {
          const sub = client.subscribe(pattern);
          sub.on('message', (m) => got.push([m.topic, m.epoch, m.seq, JSON.stringify(m.data)]));
          ready.push(sub.ready);
        }
        window.compare[transport] = { client, got };
      }
      // Bounded: page.evaluate itself has no deadline.
      let timer;
      const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`subscriptions not ready within ${waitMs} ms`)), waitMs); });
      try {
        await Promise.race([Promise.all(ready), late]);
      } finally {
        clearTimeout(timer);
      }
    }, WAIT_MS);
    const payloads = (prefix) => range(1, 60).map((n) => ({ n, s: `${prefix}-${n}`, f: n / 4, nested: { ok: n % 2 === 0, list: [n, null] } }));
    await Promise.all([
      publishJson(broker, 'cmp.a', payloads('a')),
      publishJson(broker, 'cmp.b', payloads('b')),
      publishJson(broker, 'exact.one', payloads('x')),
    ]);
    await waitInPage(page, () => Object.values(window.compare).every(({ got }) => got.length >= 180));
    const got = await page.evaluate(() => Object.fromEntries(Object.entries(window.compare).map(([k, v]) => {
      v.client.close();
      return [k, v.got];
    })));
    assert.equal(got.websocket.length, 180);
    // Per topic, every transport saw the same messages in the same order.
    const byTopic = (list) => {
      const groups = {};
      for (const entry of list) (groups[entry[0]] ??= []).push(entry);
      return groups;
    };
    const ws = byTopic(got.websocket);
    assert.deepEqual(ws['cmp.a'].map(([, , seq]) => seq), range(1, 60));
    assert.deepEqual(byTopic(got.sse), ws);
    assert.deepEqual(byTopic(got.poll), ws);
    assert.deepEqual(page.errors, []);
  } finally {
    await broker.stop();
  }
});
