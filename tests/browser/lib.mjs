// Helpers of the browser tests: the tickwire binary (a broker on
// 127.0.0.1, `tickwire pub`), Debian's Chromium through playwright-core,
// and waits on page state (never on wall-clock sleeps).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chromium } from 'playwright-core';
import { scratch, startBroker as startServe, tickwireBinary, writeFile } from '../../client-sdk/js/test/e2e/broker.mjs';

/** The tickwire binary: TICKWIRE_BIN, else the workspace's debug build. */
export const TICKWIRE_BIN = tickwireBinary();
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
/** Bound of every wait on the page or a process, ms. */
export const WAIT_MS = 20_000;

/** The environment without TICKWIRE_* variables (they would change the configuration under test). */
function cleanEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TICKWIRE_')));
}

/** A broker config file holding `text`; returns its path. */
export function configFile(text) {
  return writeFile(scratch(), 'tickwire.toml', text);
}

/**
 * Starts `tickwire serve --dashboard --listen 127.0.0.1:PORT` (0: any free
 * port) plus `args` with the JS client's e2e helper, and resolves when its
 * banner names the address.
 */
export async function startBroker({ port = 0, args = [] } = {}) {
  const broker = await startServe(['--dashboard', '--log-level', 'warn', ...args], port);
  return { ...broker, base: broker.httpUrl, ws: broker.wsUrl };
}

/** Runs `tickwire ARGS` with `input` on standard input; resolves with its output, rejects on failure. */
export function tickwire(args, input = '') {
  return new Promise((resolve, reject) => {
    const child = spawn(TICKWIRE_BIN, args, { env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { err += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`tickwire ${args.join(' ')} exited ${code}: ${err}`));
    });
    child.stdin.end(input);
  });
}

/** Publishes each of `values` (JSON) on `topic` with `tickwire pub --json --ack`; resolves with the seqs. */
export async function publishJson(broker, topic, values) {
  const input = values.map((v) => JSON.stringify(v)).join('\n') + '\n';
  const out = await tickwire(['pub', topic, '--json', '--ack', '--url', broker.ws], input);
  return out.trim().split('\n').filter(Boolean).map(Number);
}

/**
 * A long-running `tickwire pub --json TOPIC` fed line by line: `write(v)`
 * publishes one value; `end()` closes its input and waits for it to exit.
 */
export function publisher(broker, topic) {
  const child = spawn(TICKWIRE_BIN, ['pub', topic, '--json', '--url', broker.ws], { env: cleanEnv(), stdio: ['pipe', 'ignore', 'pipe'] });
  return {
    write(value) { child.stdin.write(`${JSON.stringify(value)}\n`); },
    async end() {
      const exited = once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}

/** Launches Chromium (Debian's) headless. */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/** Console errors the browser itself logs for failed connections (a broker down, a blocked transport). */
const NETWORK_NOISE = /net::ERR_|Failed to load resource|WebSocket connection to .* failed/;

/** A new page of `browser`; `page.errors` collects its uncaught errors and console errors other than network noise. */
export async function newPage(browser, viewport = { width: 1360, height: 900 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !NETWORK_NOISE.test(m.text())) page.errors.push(m.text()); });
  return page;
}

/** Waits until `fn(arg)` is truthy in the page (polled on animation frames). */
export function waitInPage(page, fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 'raf' });
}

/** Waits until the dashboard's client is connected, over `transport` if given. */
export function waitConnected(page, transport) {
  return waitInPage(page, (t) => {
    const hook = window.tickwireDashboard;
    return hook?.client?.state === 'connected' && (!t || hook.transport === t);
  }, transport ?? null);
}

/** Waits until the dashboard's `part` (ticker, tail) subscription is acknowledged. */
export function waitSubscribed(page, part) {
  return waitInPage(page, (p) => window.tickwireDashboard?.subscribed[p] === true, part);
}

/** A new page of `browser` showing `broker`'s dashboard, its client connected (over `transport` if given). */
export async function openDashboard(browser, broker, transport) {
  const page = await newPage(browser);
  await page.goto(`${broker.base}/dashboard`);
  await waitConnected(page, transport);
  return page;
}

/** Points the dashboard's live tail at `pattern` and waits for the subscription. */
export async function tailPattern(page, pattern) {
  await page.fill('#tail-pattern', pattern);
  await page.click('#tail-form button[type="submit"]');
  await waitSubscribed(page, 'tail');
}

/** The seqs the dashboard's tail received on `topic`, in arrival order. */
export function tailSeqs(page, topic) {
  return page.evaluate((t) => window.tickwireDashboard.tail.filter((m) => m.topic === t).map((m) => m.seq), topic);
}

/** Waits until the tail holds `count` messages of `topic`. */
export function waitTail(page, topic, count) {
  return waitInPage(page, ([t, n]) => window.tickwireDashboard.tail.filter((m) => m.topic === t).length >= n, [topic, count]);
}

/** 1..=n */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
