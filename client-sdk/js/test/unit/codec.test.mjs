import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeServerMessage, encodeSubscribe, encodePublish, encodePing, encodeRefresh, encodeUnsubscribe } from '../../dist/codec.js';
import { encodeCursor, decodeCursor } from '../../dist/cursor.js';

const hex = (s) => Uint8Array.from(s.split(' ').map((b) => parseInt(b, 16)));
const toHex = (u) => [...u].map((b) => b.toString(16).padStart(2, '0')).join(' ');

test('requests encode as the examples of protocol.md', () => {
  assert.equal(toHex(encodeSubscribe(1, 'stocks.*', {})), '94 01 01 a8 73 74 6f 63 6b 73 2e 2a 80');
  assert.equal(toHex(encodeSubscribe(2, 'iot.s1', { since: { 'iot.s1': ['9', 11] } })), '94 01 02 a6 69 6f 74 2e 73 31 81 a5 73 69 6e 63 65 81 a6 69 6f 74 2e 73 31 92 09 0b');
  assert.equal(toHex(encodeSubscribe(3, 'stocks.*', { last: true, maxRate: 4 })), '94 01 03 a8 73 74 6f 63 6b 73 2e 2a 82 a4 6c 61 73 74 c3 a8 6d 61 78 5f 72 61 74 65 04');
  assert.equal(toHex(encodeUnsubscribe(3, 'stocks.*')), '93 02 03 a8 73 74 6f 63 6b 73 2e 2a');
  assert.equal(toHex(encodePublish(2, 'stocks.AAPL', new TextEncoder().encode('hi'), false)), '94 03 02 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69');
  assert.equal(toHex(encodePublish(4, 'stocks.AAPL', new TextEncoder().encode('hi'), true)), '95 03 04 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69 81 a6 72 65 74 61 69 6e c3');
  assert.equal(toHex(encodePublish(null, 'stocks.AAPL', new TextEncoder().encode('hi'), false)), '94 03 c0 ab 73 74 6f 63 6b 73 2e 41 41 50 4c c4 02 68 69');
  assert.equal(toHex(encodePing(300)), '92 04 cd 01 2c');
  assert.equal(toHex(encodeRefresh(7, 'abc.def.ghi')), '93 05 07 ab 61 62 63 2e 64 65 66 2e 67 68 69');
});

test('a 64-bit epoch in since is a uint 64', () => {
  const bytes = encodeSubscribe(1, 't', { since: { t: ['9961694294009780550', 1] } });
  assert.ok(toHex(bytes).includes('cf 8a 3f 0c 2e 5b 7d 19 46'));
});

test('broker messages decode; epochs as decimal strings, time as µs number', () => {
  assert.deepEqual(decodeServerMessage(hex('96 10 ab 73 74 6f 63 6b 73 2e 41 41 50 4c cf 8a 3f 0c 2e 5b 7d 19 46 01 cf 00 06 0a 24 18 1e 40 00 c4 02 68 69')), {
    type: 'message',
    topic: 'stocks.AAPL',
    epoch: '9961694294009780550',
    seq: 1,
    time: 1700000000000000,
    payload: new TextEncoder().encode('hi'),
  });
  assert.deepEqual(decodeServerMessage(hex('93 0b 02 84 a5 65 70 6f 63 68 09 a3 73 65 71 28 a9 72 65 63 6f 76 65 72 65 64 c2 a6 6d 69 73 73 65 64 81 a6 69 6f 74 2e 73 31 92 09 28')), {
    type: 'subscribed',
    id: 2,
    info: { epoch: '9', seq: 40, recovered: false, missed: { 'iot.s1': ['9', 40] } },
  });
  assert.deepEqual(decodeServerMessage(hex('93 0d 02 ce 00 01 11 70')), { type: 'published', id: 2, seq: 70000 });
  assert.deepEqual(decodeServerMessage(hex('94 0f c0 01 a9 6d 61 6c 66 6f 72 6d 65 64')), { type: 'error', id: null, code: 1, message: 'malformed' });
  assert.deepEqual(decodeServerMessage(hex('93 11 07 81 a3 65 78 70 ce 69 55 b9 00')), { type: 'refreshed', id: 7, exp: 1767225600 });
  assert.deepEqual(decodeServerMessage(hex('92 0e 04')), { type: 'pong', id: 4 });
  assert.deepEqual(decodeServerMessage(hex('92 63 01')), { type: 'unknown' }, 'unknown types are ignored');
  assert.throws(() => decodeServerMessage(hex('90')));
  assert.throws(() => decodeServerMessage(hex('96 10 ab 73 74 6f 63 6b 73 2e 41 41 50 4c 01 01 01 a2 68 69')), 'a str payload is refused');
});

test('cursors: base64url without padding of the since map', () => {
  assert.equal(encodeCursor({}), 'gA', 'the empty map');
  const positions = { 'stocks.AAPL': ['9961694294009780550', 12], 'iot.s1': ['9', 11] };
  const cursor = encodeCursor(positions);
  assert.match(cursor, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeCursor(cursor), positions);
  // The same bytes as the SUBSCRIBE since value.
  assert.equal(encodeCursor({ 'iot.s1': ['9', 11] }), Buffer.from(hex('81 a6 69 6f 74 2e 73 31 92 09 0b')).toString('base64url'));
});

test('the cursor example of protocol.md section 15.5', () => {
  assert.equal(encodeCursor({ 'stocks.AAPL': ['9961694294009780550', 12] }), 'gatzdG9ja3MuQUFQTJLPij8MLlt9GUYM');
});

test('cursors stay within the broker bounds, keeping the most recent topics', () => {
  const many = {};
  for (let i = 0; i < 2000; i++) many[`t${i}.${'x'.repeat(200)}`] = ['18446744073709551615', i];
  const cursor = encodeCursor(many);
  assert.ok(cursor.length <= 32 * 1024);
  const kept = Object.keys(decodeCursor(cursor));
  assert.ok(kept.length <= 1024 && kept.length > 100);
  assert.equal(kept.at(-1), `t1999.${'x'.repeat(200)}`);
});
