import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matches, patternProblem, topicProblem } from '../../dist/topic.js';

test('matching follows protocol.md section 9.2', () => {
  const table = [
    ['stocks.*', 'stocks.AAPL', true],
    ['stocks.*', 'stocks', false],
    ['stocks.*', 'stocks.AAPL.bid', false],
    ['stocks.>', 'stocks.AAPL', true],
    ['stocks.>', 'stocks.AAPL.bid', true],
    ['stocks.>', 'stocks', false],
    ['stocks.*.bid', 'stocks.AAPL.bid', true],
    ['stocks.*.bid', 'stocks.AAPL.ask', false],
    ['*.b', 'a.b', true],
    ['*.b', 'a.c', false],
    ['>', 'a', true],
    ['>', 'a.b.c', true],
    ['*', 'a.b', false],
    ['a.b', 'a.b', true],
    ['a.b', 'a.b.c', false],
    ['a.b.c', 'a.b', false],
    ['stocks.aapl', 'stocks.AAPL', false],
  ];
  for (const [pattern, topic, expected] of table) assert.equal(matches(pattern, topic), expected, `${pattern} ~ ${topic}`);
});

test('validity follows protocol.md section 9.1', () => {
  const valid = ['stocks.AAPL', 'sensors.eu-west.t_1042', 'a:b@c~d'];
  for (const s of valid) {
    assert.equal(topicProblem(s), null, s);
    assert.equal(patternProblem(s), null, s);
  }
  for (const s of ['stocks.*', 'stocks.>', '>', '*.*.bid']) {
    assert.notEqual(topicProblem(s), null, s);
    assert.equal(patternProblem(s), null, s);
  }
  for (const s of ['a.>.c', 'a.b*', 'a..b', '.a', 'a.', 'a b', 'stocks/AAPL', 'café', '', 'x'.repeat(256), Array(17).fill('a').join('.')]) {
    assert.notEqual(patternProblem(s), null, JSON.stringify(s));
    assert.notEqual(topicProblem(s), null, JSON.stringify(s));
  }
  assert.equal(patternProblem('x'.repeat(255)), null);
  assert.equal(patternProblem(Array(16).fill('a').join('.')), null);
});
