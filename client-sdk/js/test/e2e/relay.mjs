// A loopback TCP relay in front of a broker, to cut a client's connection
// (as a network failure would) and to refuse reconnections for a while.
import { createServer, connect } from 'node:net';
import { once } from 'node:events';

/**
 * Starts a relay on 127.0.0.1 (free port) forwarding to `target`
 * ("host:port"). A connection whose first request is a `GET` of one of
 * `blockPaths` (e.g. `/ws`, as a proxy that refuses WebSocket) is answered
 * 403 and closed.
 */
export async function startRelay(target, { blockPaths = [] } = {}) {
  const [host, port] = target.split(':');
  const pairs = new Set();
  let blocked = false;
  const server = createServer((inbound) => {
    if (blocked) {
      inbound.destroy();
      return;
    }
    if (blockPaths.length > 0) {
      inbound.once('data', (head) => {
        const path = /^GET ([^ ?]+)/.exec(head.toString('latin1', 0, 256))?.[1];
        if (path !== undefined && blockPaths.includes(path)) {
          inbound.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
          return;
        }
        relay(inbound, head);
      });
      inbound.on('error', () => inbound.destroy());
      return;
    }
    relay(inbound);
  });
  function relay(inbound, head) {
    const outbound = connect(Number(port), host);
    if (head) outbound.write(head);
    const pair = [inbound, outbound];
    pairs.add(pair);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      pairs.delete(pair);
    };
    inbound.on('error', end).on('close', end);
    outbound.on('error', end).on('close', end);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  }
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    addr,
    wsUrl: `ws://${addr}/ws`,
    httpUrl: `http://${addr}`,
    /** Cuts every relayed connection and refuses new ones until `restore`. */
    cut() {
      blocked = true;
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    /** Accepts connections again. */
    restore() {
      blocked = false;
    },
    /** Stops the relay. */
    async stop() {
      this.cut();
      server.close();
    },
  };
}
