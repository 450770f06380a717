import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import { parseDeliveryJson, toMessage } from '../../dist/message.js';
import { errorCodeName, httpError, TickwireError } from '../../dist/errors.js';
import { jwtExpiry, refreshDelayMs } from '../../dist/jwt.js';
import { endpoints } from '../../dist/url.js';
import { streamQuery } from '../../dist/transports/streams.js';
import { decodeCursor } from '../../dist/cursor.js';

test('delivery JSON with data: msgpack subscriptions use the value, others its re-encoding', () => {
  const raw = parseDeliveryJson({ topic: 'stocks.AAPL', epoch: '9961694294009780550', seq: 12, time: 1700000000000000, data: { px: 1.5 } });
  const { message } = toMessage(raw, 'msgpack');
  assert.deepEqual(message, { topic: 'stocks.AAPL', epoch: '9961694294009780550', seq: 12, time: 1700000000000000, data: { px: 1.5 }, payload: encode({ px: 1.5 }) });
  assert.deepEqual([...toMessage(raw, 'raw').message.data], [...encode({ px: 1.5 })]);
});

test('delivery JSON with data_base64: the exact bytes, decoded per mode', () => {
  const raw = parseDeliveryJson({ topic: 't', epoch: '1', seq: 1, time: 2, data_base64: Buffer.from('{"a":1}').toString('base64') });
  assert.deepEqual(toMessage(raw, 'json').message.data, { a: 1 });
  assert.equal(new TextDecoder().decode(toMessage(raw, 'raw').message.data), '{"a":1}');
  const bad = toMessage(raw, 'msgpack');
  assert.equal(bad.message.data, undefined, 'one fixint (123) and trailing bytes are not one MessagePack value');
  assert.ok(bad.error);
});

test('undecodable payloads leave data undefined and report the error', () => {
  const raw = { topic: 't', epoch: '1', seq: 1, time: 2, payload: new Uint8Array([0xc1]) };
  const out = toMessage(raw, 'msgpack');
  assert.equal(out.message.data, undefined);
  assert.ok(out.error);
  assert.ok(toMessage(raw, 'json').error);
});

test('malformed delivery JSON is refused', () => {
  for (const bad of [null, {}, { topic: 't', epoch: 1, seq: 1, time: 1, data: 1 }, { topic: 't', epoch: '1', seq: '1', time: 1, data: 1 }, { topic: 't', epoch: '1', seq: 1, time: 1 }]) {
    assert.throws(() => parseDeliveryJson(bad), TypeError, JSON.stringify(bad));
  }
});

test('error codes map to the broker names; HTTP bodies carry theirs', () => {
  assert.equal(errorCodeName(13), 'forbidden');
  assert.equal(errorCodeName(14), 'unauthorized');
  assert.equal(errorCodeName(16), 'storage_full');
  assert.equal(errorCodeName(99), 'internal', 'unknown codes count as internal');
  const e = httpError(403, '{"error":{"code":"forbidden","message":"not granted"}}');
  assert.ok(e instanceof TickwireError);
  assert.deepEqual([e.code, e.message, e.status], ['forbidden', 'not granted', 403]);
  assert.equal(httpError(401, 'nope').code, 'unauthorized');
  assert.equal(httpError(502, '').code, 'internal');
  assert.equal(httpError(404, '<html>').code, 'transport');
});

test('JWT expiry is read without verification; refresh at 80 % of the remaining life', () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  assert.equal(jwtExpiry(`${b64({ alg: 'HS256' })}.${b64({ exp: 1767225600 })}.sig`), 1767225600);
  assert.equal(jwtExpiry(`${b64({})}.${b64({ sub: 'x' })}.sig`), undefined);
  assert.equal(jwtExpiry('opaque-api-key'), undefined);
  assert.equal(refreshDelayMs(1000, 900_000), 80_000);
  assert.equal(refreshDelayMs(1000, 999_900), 1000, 'at least 1 s');
  assert.equal(refreshDelayMs(undefined, 0), undefined);
});

test('one URL gives both endpoints', () => {
  assert.deepEqual(endpoints('ws://127.0.0.1:8080/ws'), { wsUrl: 'ws://127.0.0.1:8080/ws', httpBase: 'http://127.0.0.1:8080' });
  assert.deepEqual(endpoints('ws://h:1'), { wsUrl: 'ws://h:1/ws', httpBase: 'http://h:1' });
  assert.deepEqual(endpoints('https://h/tw/'), { wsUrl: 'wss://h/tw/ws', httpBase: 'https://h/tw' });
  assert.deepEqual(endpoints('wss://h/tw/ws'), { wsUrl: 'wss://h/tw/ws', httpBase: 'https://h/tw' });
  assert.throws(() => endpoints('ftp://h'), (e) => e.code === 'invalid_option');
});

test('stream queries: subs, last, max_rate, payload, cursor from tracked positions, token', () => {
  const sub = (pattern, over = {}) => ({ pattern, last: false, maxRate: undefined, everConfirmed: false, rawPayload: false, since: () => undefined, ...over });
  assert.equal(streamQuery([sub('a.*'), sub('b.>')], undefined), 'sub=a.*&sub=b.%3E');
  const q = new URLSearchParams(
    streamQuery([sub('a.*', { last: true, maxRate: 4, since: () => ({ 'a.x': ['5', 3] }) }), sub('b', { rawPayload: true, maxRate: 4, since: () => ({ 'a.x': ['5', 1] }) })], 'jwt', [['timeout', '25']]),
  );
  assert.deepEqual(q.getAll('sub'), ['a.*', 'b']);
  assert.equal(q.get('last'), '1');
  assert.equal(q.get('max_rate'), '4');
  assert.equal(q.get('payload'), 'base64');
  assert.deepEqual(decodeCursor(q.get('cursor')), { 'a.x': ['5', 1] });
  assert.equal(q.get('timeout'), '25');
  assert.equal(q.get('token'), 'jwt');
  assert.equal(new URLSearchParams(streamQuery([sub('a', { since: () => ({}) })], undefined, [], false)).get('cursor'), null);
});
