import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Subscription } from '../../dist/subscription.js';
import { TickwireError } from '../../dist/errors.js';

const owner = () => ({ detached: [], detach(sub) { this.detached.push(sub); } });
const msg = (seq) => ({ topic: 't', epoch: '1', seq, time: 0, data: seq, payload: new Uint8Array() });

test('the iterator queue keeps the newest bufferSize messages and counts the dropped', async () => {
  const sub = new Subscription('t', { bufferSize: 2 }, owner());
  for (let i = 1; i <= 5; i++) sub.deliver(msg(i));
  assert.equal(sub.dropped, 3);
  const it = sub[Symbol.asyncIterator]();
  assert.deepEqual([(await it.next()).value.seq, (await it.next()).value.seq], [4, 5]);
});

test('a callback-only subscription keeps no queue; an iterator gets messages too', async () => {
  const sub = new Subscription('t', {}, owner());
  const seen = [];
  sub.on('message', (m) => seen.push(m.seq));
  sub.deliver(msg(1));
  const it = sub[Symbol.asyncIterator]();
  const pending = it.next();
  sub.deliver(msg(2));
  assert.equal((await pending).value.seq, 2, 'waiting reader gets it directly');
  assert.deepEqual(seen, [1, 2]);
});

test('a refusal rejects ready, ends the iteration with the error, then done', async () => {
  const sub = new Subscription('t', {}, owner());
  const it = sub[Symbol.asyncIterator]();
  const waiting = it.next();
  sub.finish(new TickwireError('forbidden', 'no'));
  await assert.rejects(sub.ready, (e) => e.code === 'forbidden');
  await assert.rejects(waiting, (e) => e.code === 'forbidden');
  assert.equal((await it.next()).done, true);
});

test('queued messages drain before the end; breaking out of for-await unsubscribes', async () => {
  const o = owner();
  const sub = new Subscription('t', {}, o);
  sub.deliver(msg(1));
  sub.deliver(msg(2));
  for await (const m of sub) {
    assert.equal(m.seq, 1);
    break;
  }
  assert.deepEqual(o.detached, [sub]);
  assert.equal(sub.closed, true);
  const ended = new Subscription('t', {}, owner());
  ended.deliver(msg(7));
  ended.finish(undefined);
  const got = [];
  for await (const m of ended) got.push(m.seq);
  assert.deepEqual(got, [7]);
});

test('confirmation resolves ready once and emits every renewal', async () => {
  const sub = new Subscription('t', {}, owner());
  const infos = [];
  sub.on('subscribed', (i) => infos.push(i));
  sub.confirm({});
  sub.confirm({ recovered: true });
  await sub.ready;
  assert.deepEqual(infos, [{}, { recovered: true }]);
});

test('an unawaited rejected ready is not an unhandled rejection', async () => {
  let unhandled = false;
  const onUnhandled = () => (unhandled = true);
  process.on('unhandledRejection', onUnhandled);
  new Subscription('t', {}, owner()).finish(new TickwireError('forbidden', 'no'));
  await new Promise((resolve) => setImmediate(resolve));
  process.off('unhandledRejection', onUnhandled);
  assert.equal(unhandled, false);
});
