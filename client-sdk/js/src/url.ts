/**
 * The broker's two addresses from the one URL an application gives: the
 * WebSocket endpoint (`ws(s)://host/ws`) and the HTTP base
 * (`http(s)://host`) of `/v1/sse`, `/v1/poll` and `/v1/publish`.
 */
import { TickwireError } from './errors.js';

/** Both addresses of a broker. */
export interface Endpoints {
  /** WebSocket URL, without query. */
  wsUrl: string;
  /** HTTP base, no trailing slash. */
  httpBase: string;
}

/**
 * Endpoints from `ws://host[:port][/path]` (an empty path means `/ws`, the
 * HTTP base is the path without its final `/ws`) or `http://host[:port][/base]`
 * (the WebSocket path is `base/ws`); `wss:`/`https:` likewise. Relative URLs
 * resolve against the page's location in browsers.
 */
export function endpoints(url: string): Endpoints {
  let u: URL;
  try {
    const page = (globalThis as { location?: { href?: string } }).location?.href;
    u = new URL(url, page);
  } catch {
    throw new TickwireError('invalid_option', `not a URL: ${url}`);
  }
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol)) {
    throw new TickwireError('invalid_option', `unsupported URL scheme ${u.protocol} (ws, wss, http or https)`);
  }
  const path = u.pathname.replace(/\/+$/, '');
  let wsPath: string;
  let basePath: string;
  if (u.protocol === 'ws:' || u.protocol === 'wss:') {
    wsPath = path || '/ws';
    basePath = wsPath.endsWith('/ws') ? wsPath.slice(0, -3) : '';
  } else {
    basePath = path;
    wsPath = `${path}/ws`;
  }
  return {
    wsUrl: `${secure ? 'wss' : 'ws'}://${u.host}${wsPath}`,
    httpBase: `${secure ? 'https' : 'http'}://${u.host}${basePath}`,
  };
}
