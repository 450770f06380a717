// permessage-deflate with the `ws` package (which offers it by default, as
// browsers do) against a broker started with `--compression on`: large
// deliveries arrive compressed and decode as usual; the broker's metrics
// show one compression per message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Client } from '../../dist/index.js';
import { startBroker } from './broker.mjs';
import { take } from './util.mjs';

let broker;
before(async () => {
  broker = await startBroker(['--compression', 'on']);
});
after(async () => {
  await broker?.stop();
});

/** The value of the counter `name` on the broker's /metrics. */
async function metric(name) {
  const text = await (await fetch(`${broker.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('a client with permessage-deflate receives compressed deliveries', async () => {
  const c = new Client(broker.wsUrl, { WebSocket, transports: ['websocket'] });
  try {
    const sub = c.subscribe('deflate.quotes');
    await sub.ready;
    const quotes = Array.from({ length: 40 }, (_, i) => ({ sym: `SYM${i % 7}`, bid: 100 + i / 4, ask: 101 + i / 4, venue: 'XNAS' }));
    await c.publish('deflate.quotes', quotes);
    const [m] = await take(sub, 1);
    assert.deepEqual(m.data, quotes);
    assert.equal(await metric('tickwire_compression_messages_total'), 1);
    assert.ok((await metric('tickwire_compression_bytes_out_total')) * 2 < (await metric('tickwire_compression_bytes_in_total')));
  } finally {
    c.close();
  }
});
