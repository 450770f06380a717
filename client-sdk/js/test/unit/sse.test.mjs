import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser } from '../../dist/sse.js';

test('events, comments, ids and retry as the broker sends them', () => {
  const p = new SseParser();
  const text = 'retry: 1000\n\nevent: subscribed\ndata: {"sub":"a.*"}\n\n: keepalive\n\nid: gA\nevent: message\ndata: {"topic":"a.b"}\n\n';
  assert.deepEqual(p.push(text), [
    { event: 'subscribed', data: '{"sub":"a.*"}', id: '' },
    { event: 'message', data: '{"topic":"a.b"}', id: 'gA' },
  ]);
  assert.equal(p.retry, 1000);
});

test('chunks split anywhere, CRLF and CR line ends, multi-line data, default event name', () => {
  const text = 'data: one\r\ndata: two\r\n\r\nevent: x\rdata:three\r\r';
  for (let split = 0; split <= text.length; split++) {
    const p = new SseParser();
    const events = [...p.push(text.slice(0, split)), ...p.push(text.slice(split))];
    assert.deepEqual(events, [
      { event: 'message', data: 'one\ntwo', id: '' },
      { event: 'x', data: 'three', id: '' },
    ], `split at ${split}`);
  }
});

test('an event without data dispatches nothing; unknown fields are ignored', () => {
  const p = new SseParser();
  assert.deepEqual(p.push('event: lonely\n\nfoo: bar\ndata\n\n'), [{ event: 'message', data: '', id: '' }]);
});

test('an oversized event is refused', () => {
  const p = new SseParser();
  assert.throws(() => p.push(`data: ${'x'.repeat(5 * 1024 * 1024)}`), RangeError);
});
