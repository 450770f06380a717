// A stand-in for the broker's HTTP side as the transports contract
// describes it (/v1/sse, /v1/poll, /v1/publish, /healthz), to test the SSE
// and long-poll transports and the fallback without the real endpoints.
// `/ws` can be refused (HTTP 404, as a proxy that blocks WebSocket would).
import { createServer } from 'node:http';
import { once } from 'node:events';
import { decodeCursor } from '../../dist/cursor.js';
import { matches } from '../../dist/topic.js';

export async function startFake() {
  const requests = [];
  const streams = new Set(); // open SSE responses: { res, subs }
  const polls = []; // waiting poll requests: { res, subs, timer }
  const queued = []; // deliveries for the next poll
  const queuedEvents = []; // join/leave/close events for the next poll
  const seqs = new Map();
  let refuse = null; // { status, code } answered to the next stream/poll request
  const forbidden = new Set(); // patterns whose stream/poll requests are answered 403 forbidden
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const entry = { method: req.method, path: url.pathname, query: url.searchParams, headers: req.headers };
    requests.push(entry);
    if (url.pathname === '/ws') {
      res.writeHead(404).end();
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200).end('ok\n');
      return;
    }
    if ((url.pathname === '/v1/sse' || url.pathname === '/v1/poll') && refuse) {
      const { status, code } = refuse;
      refuse = null;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code, message: `${code} by the fake` } }));
      return;
    }
    const subs = url.searchParams.getAll('sub');
    if ((url.pathname === '/v1/sse' || url.pathname === '/v1/poll') && subs.some((sub) => forbidden.has(sub))) {
      res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'forbidden', message: 'not granted' } }));
      return;
    }
    if (url.pathname === '/v1/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('retry: 1000\n\n');
      const cursor = url.searchParams.get('cursor');
      for (const sub of subs) res.write(`event: subscribed\ndata: ${JSON.stringify({ sub, ...(cursor ? { recovered: true } : {}) })}\n\n`);
      const stream = { res, subs };
      streams.add(stream);
      req.on('close', () => streams.delete(stream));
      return;
    }
    if (url.pathname === '/v1/poll') {
      const first = !url.searchParams.get('session');
      const events = first ? subs.map((sub) => ({ type: 'subscribed', sub })) : [];
      const answer = () => {
        const messages = queued.splice(0).filter((d) => subs.some((s) => matches(s, d.topic)));
        events.push(...queuedEvents.splice(0));
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ session: 'f00d', cursor: 'gA', messages, events }));
      };
      if (events.length > 0 || queued.length > 0 || queuedEvents.length > 0) {
        answer();
        return;
      }
      const waiting = { answer, timer: setTimeout(() => remove(), Number(url.searchParams.get('timeout') ?? 25) * 1000) };
      const remove = () => {
        clearTimeout(waiting.timer);
        const i = polls.indexOf(waiting);
        if (i >= 0) polls.splice(i, 1);
        if (!res.writableEnded) answer();
      };
      waiting.remove = remove;
      polls.push(waiting);
      req.on('close', () => {
        clearTimeout(waiting.timer);
        const i = polls.indexOf(waiting);
        if (i >= 0) polls.splice(i, 1);
      });
      return;
    }
    if (req.method === 'GET' && url.pathname.startsWith('/v1/presence/')) {
      // The server API's answer (docs/http-api.md), for topic room.1 only.
      const [topic, stats] = url.pathname.slice('/v1/presence/'.length).split('/');
      if (topic !== 'room.1') {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'presence_disabled', message: 'no presence' } }));
        return;
      }
      const entries = [{ client: 'c1', user: 'alice', info: { name: 'Alice' } }, { client: 'c2', info_base64: 'gaFuAQ==' }];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ topic, clients: 2, users: 1, ...(stats ? {} : { entries }) }));
      return;
    }
    if (req.method === 'POST' && url.pathname.startsWith('/v1/publish/')) {
      const topic = url.pathname.slice('/v1/publish/'.length);
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        entry.body = Buffer.concat(chunks);
        const seq = (seqs.get(topic) ?? 0) + 1;
        seqs.set(topic, seq);
        deliver({ topic, epoch: '77', seq, time: 1, data_base64: entry.body.toString('base64') });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ deliveries: 1, seq, topic }));
      });
      return;
    }
    res.writeHead(404).end();
  });
  function deliver(d) {
    for (const { res, subs } of streams) {
      if (subs.some((s) => matches(s, d.topic))) res.write(`id: x\nevent: message\ndata: ${JSON.stringify(d)}\n\n`);
    }
    queued.push(d);
    for (const p of polls.splice(0)) p.remove();
  }
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    requests,
    deliver,
    /** The next stream or poll request is answered with this error. */
    refuseNext(status, code) {
      refuse = { status, code };
    },
    /** Every later stream or poll request that includes `pattern` is answered 403 forbidden. */
    forbid(pattern) {
      forbidden.add(pattern);
    },
    /** Cursor positions of a request, or null. */
    cursorOf(request) {
      const c = request.query.get('cursor');
      return c === null ? null : decodeCursor(c);
    },
    /** A `join` or `leave` event: on every SSE stream, and in the next poll answer. */
    presence(kind, value) {
      for (const { res } of streams) res.write(`event: ${kind}\ndata: ${JSON.stringify(value)}\n\n`);
      queuedEvents.push({ type: kind, ...value });
      for (const p of polls.splice(0)) p.remove();
    },
    /** Closes every SSE stream and the poll session with this code (`close` event). */
    close(code, reason) {
      for (const { res } of streams) res.end(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
      streams.clear();
      queuedEvents.push({ type: 'close', code, reason });
      for (const p of polls.splice(0)) p.remove();
    },
    /** Ends every open SSE stream with `event: close`. */
    closeStreams(code, reason) {
      for (const { res } of streams) res.end(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
      streams.clear();
    },
    async stop() {
      for (const { res } of streams) res.destroy();
      server.closeAllConnections();
      server.close();
    },
  };
}
