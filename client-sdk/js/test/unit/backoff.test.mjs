import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay } from '../../dist/backoff.js';

test('full jitter: uniform in [0, min(max, initial * 2^(n-1))]', () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(1, {}, top), 99);
  assert.equal(backoffDelay(2, {}, top), 199);
  assert.equal(backoffDelay(4, {}, top), 799);
  assert.equal(backoffDelay(30, {}, top), 29_999, 'capped at 30 s by default');
  assert.equal(backoffDelay(1000, { initialDelayMs: 50, maxDelayMs: 1000 }, top), 999);
  assert.equal(backoffDelay(3, {}, () => 0), 0, 'the jitter reaches down to zero');
  assert.equal(backoffDelay(0, {}, top), 99, 'attempts count from 1');
});

test('delays stay within their bounds', () => {
  for (let attempt = 1; attempt < 40; attempt++) {
    const d = backoffDelay(attempt, { initialDelayMs: 10, maxDelayMs: 500 });
    assert.ok(d >= 0 && d < Math.min(500, 10 * 2 ** (attempt - 1)), `${attempt}: ${d}`);
  }
});
