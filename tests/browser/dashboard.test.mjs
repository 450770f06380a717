// The dashboard page in a real Chromium: it loads, shows rates, its ticker
// table shows what `tickwire pub` publishes, its client resumes after a
// broker restart on the same port, and a screenshot under load is saved as
// docs/images/dashboard.png.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, test } from 'node:test';
import {
  WAIT_MS, configFile, launch, newPage, openDashboard, publishJson, publisher, range,
  startBroker, tailPattern, tailSeqs, waitConnected, waitInPage, waitSubscribed, waitTail,
} from './lib.mjs';

const SCREENSHOT = new URL('../../docs/images/dashboard.png', import.meta.url).pathname;

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('the dashboard loads, shows rates, and its ticker shows what tickwire pub publishes', async () => {
  const broker = await startBroker();
  try {
    const page = await newPage(browser);
    const response = await page.goto(`${broker.base}/dashboard`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
    await waitConnected(page);
    await page.locator('#health[data-state="ok"]').waitFor({ timeout: WAIT_MS });
    await waitSubscribed(page, 'ticker');
    // The ticker subscribes to stocks.* with maxRate; the first message
    // creates the row.
    await publishJson(broker, 'stocks.AAPL', [{ px: 189.5 }]);
    await publishJson(broker, 'stocks.MSFT', [{ px: 411.25 }]);
    const aapl = page.locator('#ticker-body tr[data-topic="stocks.AAPL"]');
    await aapl.locator('td.val', { hasText: '189.50' }).waitFor({ timeout: WAIT_MS });
    await page.locator('#ticker-body tr[data-topic="stocks.MSFT"] td.val', { hasText: '411.25' }).waitFor({ timeout: WAIT_MS });
    // A new value updates the row in place, with its change.
    await publishJson(broker, 'stocks.AAPL', [{ px: 190.75 }]);
    await aapl.locator('td.val', { hasText: '190.75' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await aapl.getAttribute('data-dir'), 'up');
    assert.match(await aapl.locator('td.change').textContent(), /▲ 1\.25/);
    assert.equal(await page.locator('#ticker-body tr').count(), 2);
    assert.equal(await aapl.locator('td.num').nth(2).textContent(), '2');

    // Rates: deltas of /v1/stats; publish until the page shows a rate.
    const feed = publisher(broker, 'load.rates');
    let n = 0;
    const feeding = setInterval(() => feed.write({ n: n++ }), 5);
    try {
      await waitInPage(page, () => Number.parseFloat(document.getElementById('rate-publishes').textContent) > 0);
      await waitInPage(page, () => document.getElementById('connections').textContent !== '–');
    } finally {
      clearInterval(feeding);
      await feed.end();
    }
    assert.deepEqual(page.errors, []);
  } finally {
    await broker.stop();
  }
});

test('a burst of thousands of messages is rendered in a few frames, with a bounded tail', async () => {
  const broker = await startBroker();
  try {
    const page = await openDashboard(browser, broker);
    await tailPattern(page, 'burst.>');
    const before = await page.evaluate(() => window.tickwireDashboard.renders);
    const count = 5000;
    await publishJson(broker, 'burst.x', range(1, count).map((n) => ({ n })));
    await waitTail(page, 'burst.x', count);
    await waitInPage(page, (n) => document.getElementById('tail-body').dataset.lastSeq === String(n), count);
    const renders = (await page.evaluate(() => window.tickwireDashboard.renders)) - before;
    // Messages are coalesced: far fewer DOM passes than messages.
    assert.ok(renders < count / 10, `${renders} renders for ${count} messages`);
    assert.equal(await page.locator('#tail-body tr').count(), 200);
    assert.equal(await page.locator('#tail-body tr').first().locator('td.num').textContent(), String(count));
    assert.deepEqual(await tailSeqs(page, 'burst.x'), range(1, count));
    assert.deepEqual(page.errors, []);
  } finally {
    await broker.stop();
  }
});

test('the page\'s client resumes without a gap after the broker restarts on the same port', async () => {
  // History for resume.>: after the restart, a topic new to the client is
  // replayed from its start, so the order of reconnect and publish does not
  // matter.
  const config = configFile('[[topic]]\npattern = "resume.>"\nhistory_messages = 1000\n');
  let broker = await startBroker({ args: ['--config', config] });
  const port = broker.port;
  try {
    const page = await openDashboard(browser, broker);
    await tailPattern(page, 'resume.>');
    await publishJson(broker, 'resume.before', range(1, 50).map((n) => ({ n })));
    await waitTail(page, 'resume.before', 50);

    await broker.stop();
    await waitInPage(page, () => window.tickwireDashboard.client.state !== 'connected');
    broker = await startBroker({ port, args: ['--config', config] });
    // Published while the page may still be reconnecting.
    await publishJson(broker, 'resume.after', range(1, 50).map((n) => ({ n })));
    await waitConnected(page);
    await waitTail(page, 'resume.after', 50);
    await publishJson(broker, 'resume.after', range(51, 60).map((n) => ({ n })));
    await waitTail(page, 'resume.after', 60);

    assert.deepEqual(await tailSeqs(page, 'resume.before'), range(1, 50));
    assert.deepEqual(await tailSeqs(page, 'resume.after'), range(1, 60));
    assert.equal(await page.locator('#tail-body tr').count(), 110);
    assert.deepEqual(page.errors, []);
  } finally {
    await broker.stop();
  }
});

test('a screenshot of the dashboard under load', async () => {
  const broker = await startBroker();
  const symbols = { AAPL: 189.5, MSFT: 411.2, NVDA: 121.4, AMZN: 186.9, GOOG: 171.3, META: 502.8, TSLA: 248.1, NFLX: 655.4 };
  const feeds = Object.keys(symbols).map((s) => [s, publisher(broker, `stocks.${s}`)]);
  const news = publisher(broker, 'news.markets');
  const sensors = publisher(broker, 'iot.site1.temp');
  let tick = 0;
  // A random walk per symbol, a few hundred messages per second in all.
  const load = setInterval(() => {
    tick += 1;
    for (const [symbol, feed] of feeds) {
      symbols[symbol] = Math.max(1, symbols[symbol] * (1 + (Math.random() - 0.5) * 0.004));
      feed.write({ px: Number(symbols[symbol].toFixed(2)), vol: 100 + Math.floor(Math.random() * 900) });
    }
    sensors.write({ c: Number((21 + Math.sin(tick / 20)).toFixed(2)) });
    if (tick % 10 === 0) news.write({ headline: `Markets update #${tick / 10}`, source: 'wire' });
  }, 20);
  try {
    const page = await openDashboard(browser, broker);
    await tailPattern(page, 'news.>');
    await waitInPage(page, () => document.querySelectorAll('#ticker-body tr').length === 8);
    await waitInPage(page, () => document.querySelectorAll('#busiest li').length >= 5);
    await waitInPage(page, () => document.querySelectorAll('#tail-body tr').length >= 3);
    // Enough stats samples for the sparklines to show a line.
    await waitInPage(page, () => Number(document.body.dataset.statsSeen) >= 6);
    mkdirSync(new URL('.', `file://${SCREENSHOT}`).pathname, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.deepEqual(page.errors, []);
  } finally {
    clearInterval(load);
    await Promise.all([...feeds.map(([, f]) => f.end()), news.end(), sensors.end()]);
    await broker.stop();
  }
});
