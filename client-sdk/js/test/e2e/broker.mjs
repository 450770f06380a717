// Starting real `tickwire serve` processes for the end-to-end tests.
//
// The binary is TICKWIRE_BIN when set, else this repository's
// target/debug/tickwire (under CARGO_TARGET_DIR when set), built once per
// test process with
// `cargo build -p tickwire-cli` (a no-op when it is up to date).
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
/** How long a broker may take to print its banner or to exit. */
const WAIT_MS = 20_000;

let built;

/** The tickwire binary to test. */
export function tickwireBinary() {
  if (process.env.TICKWIRE_BIN) return process.env.TICKWIRE_BIN;
  if (!built) {
    execFileSync('cargo', ['build', '-p', 'tickwire-cli'], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
    built = join(process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target'), 'debug', 'tickwire');
  }
  return built;
}

/** The environment without TICKWIRE_* variables, so the caller's cannot change the broker under test. */
function cleanEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TICKWIRE_')));
}

/** A scratch directory for configuration and secrets. */
export function scratch() {
  return mkdtempSync(join(tmpdir(), 'tickwire-js-'));
}

/** Writes `text` to `name` in `dir` and returns its path. */
export function writeFile(dir, name, text) {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/**
 * A config file in a fresh scratch directory that keeps a history of 1000
 * messages for the topics under `iot.`; returns its path.
 */
export function historyConfig() {
  return writeFile(scratch(), 'history.toml', '[[topic]]\npattern = "iot.>"\nhistory_messages = 1000\n');
}

/**
 * Starts `tickwire serve --listen 127.0.0.1:PORT ARGS` (port 0 unless given)
 * and waits for its banner (`tickwire listening on ADDR ...`, the address
 * as the 4th word, as tests/src/lib.rs banner_addr reads it).
 */
export async function startBroker(args = [], port = 0) {
  const child = spawn(tickwireBinary(), ['serve', '--listen', `127.0.0.1:${port}`, ...args], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr = [];
  child.stderr.on('data', (d) => {
    stderr.push(d);
    if (stderr.length > 200) stderr.shift();
  });
  const lines = createInterface({ input: child.stdout });
  const banner = await Promise.race([
    once(lines, 'line').then(([line]) => line),
    once(child, 'exit').then(([code]) => Promise.reject(new Error(`tickwire serve exited (${code}): ${Buffer.concat(stderr)}`))),
    new Promise((_, reject) => setTimeout(() => reject(new Error('no banner in time')), WAIT_MS).unref()),
  ]);
  const addr = banner.split(/\s+/)[3];
  if (!addr || !/^127\.0\.0\.1:\d+$/.test(addr)) throw new Error(`no address in banner ${JSON.stringify(banner)}`);
  return {
    addr,
    port: Number(addr.split(':')[1]),
    wsUrl: `ws://${addr}/ws`,
    httpUrl: `http://${addr}`,
    /** Stops the broker (SIGTERM) and waits for it to exit. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `tickwire ARGS` output (for `tickwire token`). */
export function tickwire(args) {
  return execFileSync(tickwireBinary(), args, { env: cleanEnv(), encoding: 'utf8' }).trim();
}

/** An HTTP publish of raw `body` bytes; resolves with the JSON answer. */
export async function httpPublish(broker, topic, body, headers = {}) {
  const res = await fetch(`${broker.httpUrl}/v1/publish/${topic}`, { method: 'POST', body, headers });
  return { status: res.status, body: await res.json() };
}
