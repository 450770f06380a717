import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PositionTracker, mergePositions, MAX_TRACKED_TOPICS } from '../../dist/positions.js';
import { PatternEntry } from '../../dist/entry.js';

test('repeats in the same epoch are duplicates; another epoch is new', () => {
  const t = new PositionTracker();
  assert.equal(t.accept('a', '7', 1), 'new');
  assert.equal(t.accept('a', '7', 2), 'new');
  assert.equal(t.accept('a', '7', 2), 'duplicate');
  assert.equal(t.accept('a', '7', 1), 'duplicate');
  assert.equal(t.accept('a', '7', 5), 'new', 'a gap is still new');
  assert.equal(t.accept('a', '9', 1), 'new', 'a reset topic (new epoch) starts over');
  assert.deepEqual(t.get('a'), ['9', 1]);
});

test('snapshots list topics least recently delivered first; missed positions replace tracked ones', () => {
  const t = new PositionTracker({ x: ['1', 4] });
  t.accept('a', '1', 1);
  t.accept('b', '2', 3);
  t.accept('a', '1', 2);
  assert.deepEqual(Object.keys(t.snapshot()), ['x', 'b', 'a']);
  t.reset({ a: ['5', 10], x: ['0', 0] });
  assert.deepEqual(t.snapshot(), { b: ['2', 3], a: ['5', 10] }, 'epoch 0 means untracked: forgotten');
  assert.equal(t.accept('a', '5', 10), 'duplicate');
  assert.equal(t.accept('a', '5', 11), 'new');
});

test('tracking is bounded', () => {
  const t = new PositionTracker();
  for (let i = 0; i <= MAX_TRACKED_TOPICS; i++) t.accept(`t${i}`, '1', 1);
  assert.equal(t.size, MAX_TRACKED_TOPICS);
  assert.equal(t.get('t0'), undefined, 'the least recently delivered goes');
});

test('a merged cursor takes the earliest position per topic in the same epoch', () => {
  assert.deepEqual(
    mergePositions([{ a: ['1', 5], b: ['2', 1] }, { a: ['1', 3], c: ['3', 9] }, { b: ['4', 7] }]),
    { a: ['1', 3], b: ['2', 1], c: ['3', 9] },
  );
});

test('since: given positions first, tracked positions on every renewal, nothing without resume', () => {
  const fresh = new PatternEntry('s.*', {});
  assert.equal(fresh.since(), undefined, 'a new subscription is live only');
  assert.equal(fresh.sentSince, false);
  const given = new PatternEntry('s.*', { since: { 's.a': ['9', 11] } });
  assert.deepEqual(given.since(), { 's.a': ['9', 11] });
  assert.equal(given.sentSince, true);
  const renewed = new PatternEntry('s.*', {});
  renewed.everConfirmed = true;
  assert.deepEqual(renewed.since(), {}, 'renewed with nothing seen: all retained history of new topics');
  renewed.tracker.accept('s.b', '3', 4);
  assert.deepEqual(renewed.since(), { 's.b': ['3', 4] });
  const live = new PatternEntry('s.*', { resume: false });
  live.everConfirmed = true;
  live.tracker.accept('s.b', '3', 4);
  assert.equal(live.since(), undefined);
  assert.equal(new PatternEntry('p', { maxRate: 2.7 }).maxRate, 2);
});
