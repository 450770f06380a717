#!/usr/bin/env python3
"""An outside client of tickwire, written from the docs alone.

It plays the part of a team that implements a client from docs/protocol.md,
docs/http-api.md, docs/semantics.md, docs/security.md, docs/configuration.md
and docs/cli.md, without reading the broker's sources, and checks the
presence features and the server API against what those documents promise
(see docs/conformance.md, "Outside client (presence and server API)").

Usage: presence_client.py TICKWIRE_BINARY WORKDIR PORT
(run.sh starts the broker and passes these). Every check prints PASS or
FAIL; the exit status is 1 when any check failed.
"""

import base64
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.parse

import msgpack

BIN, WORK, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOST = "127.0.0.1"
FAILURES = []

# Message type numbers, protocol.md section 4.
SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, PRESENCE = 1, 2, 3, 4, 7
SUBSCRIBED, UNSUBSCRIBED, PUBLISHED, PONG, ERROR = 11, 12, 13, 14, 15
MESSAGE, PRESENCE_INFO, JOIN, LEAVE = 16, 18, 19, 20
# Error codes, protocol.md section 10.
MALFORMED, INVALID_TOPIC, INVALID_OPTION, FORBIDDEN = 1, 3, 5, 13
PRESENCE_DISABLED = 18

WAIT = 5.0  # bound of every wait for an expected frame or answer


def check(name, ok, detail=""):
    """Prints one check's verdict and remembers a failure."""
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        FAILURES.append(name)


def pack(value):
    """The canonical MessagePack encoding (protocol.md section 4)."""
    return msgpack.packb(value, use_bin_type=True)


def unhex(text):
    return bytes.fromhex(text)


class Closed(Exception):
    """The broker closed the WebSocket (code, reason) or the TCP connection."""

    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code, self.reason = code, reason


class Ws:
    """A minimal RFC 6455 client: binary frames only, as protocol.md section 3."""

    def __init__(self, token=None, client=None, expect_status=101):
        query = {}
        if token:
            query["token"] = token
        if client is not None:
            query["client"] = client
        path = "/ws" + ("?" + urllib.parse.urlencode(query) if query else "")
        self.sock = socket.create_connection((HOST, PORT), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tickwire.v1\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head else 0
        self.head = head.decode("latin-1")
        if self.status != expect_status:
            raise AssertionError(f"upgrade answered {self.status}, expected {expect_status}: {head!r}")
        self.next_id = 100

    def _read(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "eof")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_raw(self, payload, opcode=0x2):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, value):
        self.send_raw(pack(value))

    def recv_frame(self, timeout=WAIT):
        """The next broker message as (raw bytes, decoded array); Closed on a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            b0, b1 = self._read(2, deadline)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2, deadline))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8, deadline))[0]
            payload = self._read(n, deadline)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode())
            if opcode == 0x9:
                self.send_raw(payload, 0xA)
                continue
            if opcode == 0x2:
                return payload, msgpack.unpackb(payload, raw=False, strict_map_key=False)

    def request(self, value, timeout=WAIT):
        """Sends a request and returns (raw, reply) for its id, with the frames seen before it."""
        self.send(value)
        return self.until(lambda m: m[0] in (SUBSCRIBED, UNSUBSCRIBED, PUBLISHED, PONG, ERROR, 17, PRESENCE_INFO)
                          and m[1] == value[1], timeout)

    def until(self, pred, timeout=WAIT):
        """Reads frames until one matches; returns (raw, message, frames skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame; saw {skipped}")
            raw, msg = self.recv_frame(left)
            if pred(msg):
                return raw, msg, skipped
            skipped.append(msg)

    def barrier(self):
        """A PING round trip (section 8.3 item 5); returns the frames that came before the PONG."""
        self.next_id += 1
        _, _, seen = self.request([PING, self.next_id])
        return seen

    def close(self, code=1000):
        try:
            self.send_raw(struct.pack(">H", code), 0x8)
            self.sock.close()
        except OSError:
            pass

    def drop(self):
        """Ends the TCP connection without a close frame (a lost network)."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def http_req(method, path, body=None, token=None, headers=None):
    """One HTTP request; returns (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(HOST, PORT, timeout=WAIT)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def http_json(method, path, body=None, token=None):
    status, headers, data = http_req(method, path, body, token)
    try:
        return status, headers, json.loads(data)
    except ValueError:
        return status, headers, data


def is_error_body(body, code):
    return isinstance(body, dict) and set(body) == {"error"} and body["error"].get("code") == code \
        and isinstance(body["error"].get("message"), str)


def token(*args):
    secret = os.path.join(WORK, "secret")
    out = subprocess.run([BIN, "token", "--hmac-secret-file", secret, "--ttl", "1h", *args],
                         check=True, capture_output=True, text=True, timeout=WAIT)
    return out.stdout.strip()


def cli(*args, tok=None):
    cmd = [BIN, *args, "--url", f"http://{HOST}:{PORT}"]
    if tok:
        cmd += ["--token", tok]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    return out.returncode, out.stdout, out.stderr


def guarded(fn):
    """Runs one group of checks; an exception is a failure of the group."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - any failure is reported, then the run goes on
        check(fn.__name__, False, f"{type(err).__name__}: {err}")


# Tokens (security.md, cli.md `tickwire token`).
ALICE = token("--sub", "room.>,plain.>,hist.>", "--pub", "room.>,plain.>,hist.>", "--subject", "alice")
ALICE_INFO = token("--sub", "room.>,plain.>", "--pub", "room.>", "--subject", "alice", "--info", '{"name":"Alice"}')
BOB = token("--sub", "room.>", "--pub", "room.>", "--subject", "bob")
NARROW = token("--sub", "other.>", "--pub", "room.a.>", "--subject", "carol")
ADMIN = token("--admin", "--pub", ">", "--sub", ">")
HUGE_INT_INFO = token("--sub", "room.>", "--subject", "erin", "--info", '{"n":9007199254740993}')
BIG_INFO = token("--sub", "room.>", "--subject", "dave", "--info", json.dumps({"pad": "x" * 200}))


MARKS = [0]


def marker(actor, topic, watcher):
    """A doc-backed barrier for another connection's events: the actor
    publishes on `topic` and the watcher (subscribed to it) reads up to that
    message; a JOIN/LEAVE the actor caused before it comes first
    (protocol.md 8.3 item 6). Returns the frames before the marker."""
    MARKS[0] += 1
    payload = b"mark-%d" % MARKS[0]
    _, reply, _ = actor.request([PUBLISH, 900 + MARKS[0], topic, payload])
    assert reply[0] == PUBLISHED, reply
    _, _, seen = watcher.until(lambda m: m[0] == MESSAGE and m[5] == payload)
    return seen


def watcher(tok, client, topic, kind=True):
    """A connection subscribed to `topic` with join_leave `kind`, past its own JOIN."""
    ws = Ws(tok, client=client)
    subscribed(ws, 1, topic, {"join_leave": kind})
    ws.until(lambda m: m[0] == JOIN)
    return ws


def subscribed(ws, rid, pattern, options=None):
    msg = [SUBSCRIBE, rid, pattern] + ([options] if options is not None else [])
    _, reply, _ = ws.request(msg)
    assert reply[0] == SUBSCRIBED, f"subscribe {pattern} {options}: {reply}"
    return reply


def doc_byte_examples():
    a = Ws(ALICE, client="c1")
    # protocol.md 5.1: the join_leave example, byte for byte.
    a.send_raw(unhex("94 01 06 a6 72 6f 6f 6d 2e 31 81 aa 6a 6f 69 6e 5f 6c 65 61 76 65 a7 63 6c 69 65 6e 74 73"))
    raw, reply, _ = a.until(lambda m: m[1] == 6)
    check("SUBSCRIBE join_leave=\"clients\" example is accepted", reply[0] == SUBSCRIBED, reply)
    info = reply[2]
    check("SUBSCRIBED of a presence topic carries client = the connection's client=", info.get("client") == "c1", info)
    expected = pack([SUBSCRIBED, 6, {"epoch": info.get("epoch"), "seq": 0, "client": "c1"}])
    check("SUBSCRIBED bytes are laid out as the 6.1 example (epoch, seq, client)", raw == expected,
          f"{raw.hex(' ')} vs {expected.hex(' ')}")
    raw, join, _ = a.until(lambda m: m[0] in (JOIN, LEAVE, MESSAGE))
    doc_join = unhex("93 13 a6 72 6f 6f 6d 2e 31 82 a6 63 6c 69 65 6e 74 a2 63 31 a4 75 73 65 72 a5 61 6c 69 63 65")
    check("own JOIN follows SUBSCRIBED, bytes equal the 6.9 example", raw == doc_join, raw.hex(" "))
    # protocol.md 5.7 / 6.8: PRESENCE examples.
    a.send_raw(unhex("93 07 05 a6 72 6f 6f 6d 2e 31"))
    raw, _, _ = a.until(lambda m: m[1] == 5)
    doc_info = unhex("93 12 05 83 a7 63 6c 69 65 6e 74 73 01 a5 75 73 65 72 73 01 a7 65 6e 74 72 69 65 73 91 82"
                     " a6 63 6c 69 65 6e 74 a2 63 31 a4 75 73 65 72 a5 61 6c 69 63 65")
    check("PRESENCE list answer equals the 6.8 example bytes", raw == doc_info, raw.hex(" "))
    a.send_raw(unhex("94 07 04 a6 72 6f 6f 6d 2e 31 81 a6 63 6f 75 6e 74 73 c3"))
    raw, _, _ = a.until(lambda m: m[1] == 4)
    check("PRESENCE counts answer equals the 6.8 counts layout",
          raw == pack([PRESENCE_INFO, 4, {"clients": 1, "users": 1}]), raw.hex(" "))
    # protocol.md 6.9: a user-level LEAVE example.
    w = Ws(BOB, client="w1")
    subscribed(w, 1, "room.1", {"join_leave": "users"})
    w.until(lambda m: m[0] == JOIN and m[2].get("user") == "bob")
    a.close(1000)
    raw, _, _ = w.until(lambda m: m[0] == LEAVE)
    check("user-level LEAVE equals the 6.9 example bytes",
          raw == unhex("93 14 a6 72 6f 6f 6d 2e 31 81 a4 75 73 65 72 a5 61 6c 69 63 65"), raw.hex(" "))
    w.close()


def join_leave_values():
    a = Ws(ALICE, client="jl")
    rid = 10
    for value in (True, "clients", "users", False):
        rid += 1
        _, reply, _ = a.request([SUBSCRIBE, rid, f"room.v{rid}", {"join_leave": value}])
        check(f"join_leave={value!r} is accepted", reply[0] == SUBSCRIBED, reply)
        events = a.barrier()
        joins = [m for m in events if m[0] == JOIN]
        want = {True: 1, "clients": 1, "users": 1, False: 0}[value]
        check(f"join_leave={value!r}: {want} own JOIN after SUBSCRIBED", len(joins) == want, events)
        if value == "users" and joins:
            check("user-level JOIN has user, no client", "client" not in joins[0][2] and joins[0][2].get("user") == "alice",
                  joins[0])
    for value in ("Clients", "all", 1, None, ["clients"]):
        rid += 1
        _, reply, _ = a.request([SUBSCRIBE, rid, "room.vbad", {"join_leave": value}])
        check(f"join_leave={value!r} is invalid_option with the request id",
              reply[0] == ERROR and reply[1] == rid and reply[2] == INVALID_OPTION, reply)
    rid += 1
    _, reply, _ = a.request([SUBSCRIBE, rid, "plain.x", {"join_leave": True}])
    check("join_leave on an exact topic without presence: presence_disabled",
          reply[0] == ERROR and reply[2] == PRESENCE_DISABLED, reply)
    rid += 1
    _, reply, _ = a.request([SUBSCRIBE, rid, "plain.x"])
    check("nothing was subscribed by the refused join_leave; SUBSCRIBED without client on a topic without presence",
          reply[0] == SUBSCRIBED and "client" not in reply[2], reply)
    rid += 1
    _, reply, _ = a.request([SUBSCRIBE, rid, "plain.*", {"join_leave": True}])
    check("join_leave on a wildcard with no presence topic is accepted", reply[0] == SUBSCRIBED and reply[2] == {}, reply)
    rid += 1
    raw, reply, _ = a.request([SUBSCRIBE, rid, "room.w.*", {"join_leave": True}])
    check("a wildcard SUBSCRIBED has no client key", reply[0] == SUBSCRIBED and reply[2] == {}, reply)
    a.close()


def presence_requests():
    a = Ws(ALICE_INFO, client="p1")
    subscribed(a, 1, "room.p")
    _, reply, _ = a.request([PRESENCE, 2, "room.p"])
    entries = reply[2].get("entries") if reply[0] == PRESENCE_INFO else None
    check("PRESENCE entry carries the token's info (tw.info)",
          entries == [{"client": "p1", "user": "alice", "info": {"name": "Alice"}}], reply)
    _, reply, _ = a.request([PRESENCE, 3, "room.p", {"counts": True}])
    check("PRESENCE counts: clients and users, no entries",
          reply[0] == PRESENCE_INFO and reply[2] == {"clients": 1, "users": 1}, reply)
    _, reply, _ = a.request([PRESENCE, 4, "room.p", None])
    check("PRESENCE with nil options is the list", reply[0] == PRESENCE_INFO and "entries" in reply[2], reply)
    _, reply, _ = a.request([PRESENCE, 5, "room.other"])
    check("PRESENCE of a presence topic nobody is on: zero counts, empty list",
          reply[0] == PRESENCE_INFO and reply[2].get("clients") == 0 and reply[2].get("entries") == [], reply)
    for rid, topic, code, what in ((6, "room.*", INVALID_TOPIC, "a pattern"), (7, "", INVALID_TOPIC, "an empty topic"),
                                   (8, "plain.x", PRESENCE_DISABLED, "a topic without presence"),
                                   (9, "secret.x", FORBIDDEN, "a topic outside the grants")):
        _, reply, _ = a.request([PRESENCE, rid, topic])
        check(f"PRESENCE of {what}: error {code} with the id", reply[0] == ERROR and reply[1] == rid and reply[2] == code, reply)
    for rid, opts in ((10, {"counts": 1}), (11, {"count": True})):
        _, reply, _ = a.request([PRESENCE, rid, "room.p", opts])
        check(f"PRESENCE option {opts}: invalid_option", reply[0] == ERROR and reply[2] == INVALID_OPTION, reply)
    # Section 7: a decode error keeps the id when element 0 is a known client type.
    a.send([PRESENCE, 12, 5])
    _, reply, _ = a.until(lambda m: m[0] == ERROR)
    check("PRESENCE with a non-str topic: malformed, with the request id (section 7)",
          reply[1] == 12 and reply[2] == MALFORMED, reply)
    a.send([PRESENCE, 13])
    _, reply, _ = a.until(lambda m: m[0] == ERROR)
    check("PRESENCE of 2 elements: malformed with the id", reply[1] == 13 and reply[2] == MALFORMED, reply)
    a.close()
    n = Ws(NARROW)
    _, reply, _ = n.request([PRESENCE, 1, "room.p"])
    _, pub_reply, _ = n.request([SUBSCRIBE, 2, "room.p"])
    check("PRESENCE forbidden has the same text as a refused subscribe",
          reply[0] == ERROR and reply[2] == FORBIDDEN and pub_reply[0] == ERROR and reply[3] == pub_reply[3],
          (reply, pub_reply))
    n.close()


def ordering():
    b = watcher(BOB, "ob", "room.o")
    a = Ws(ALICE, client="oa")
    subscribed(a, 1, "room.o")
    for i in range(3):
        a.send([PUBLISH, None, "room.o", bytes([i])])
    _, reply, _ = a.request([UNSUBSCRIBE, 9, "room.o"])
    _, _, seen = b.until(lambda m: m[0] == LEAVE)
    kinds = [(m[0], m[5] if m[0] == MESSAGE else m[2].get("client")) for m in seen]
    want = [(JOIN, "oa"), (MESSAGE, b"\x00"), (MESSAGE, b"\x01"), (MESSAGE, b"\x02")]
    check("JOIN, then the joiner's messages, then its LEAVE on UNSUBSCRIBE (8.3 item 6)", kinds == want, kinds)
    # A wildcard join_leave subscriber gets the events of every matching presence topic.
    w = Ws(BOB, client="ow")
    subscribed(w, 1, "room.*", {"join_leave": True})
    subscribed(a, 10, "room.o")
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("a wildcard join_leave subscription receives JOIN of a matching topic",
          ev[0] == JOIN and ev[1] == "room.o" and ev[2].get("client") == "oa", ev)
    b.until(lambda m: m[0] == JOIN and m[2].get("client") == "oa")
    a.close(1000)
    _, ev, _ = b.until(lambda m: m[0] in (JOIN, LEAVE))
    check("close 1000 removes the entry at once (LEAVE)", ev[0] == LEAVE and ev[2].get("client") == "oa", ev)
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("... seen by the wildcard subscriber too, once", ev[0] == LEAVE, ev)
    w.close()
    b.close()


def grace():
    w = watcher(BOB, "gw", "room.g")
    a = Ws(ALICE, client="g1")
    subscribed(a, 1, "room.g")
    w.until(lambda m: m[0] == JOIN and m[2]["client"] == "g1")
    a.drop()
    a2 = Ws(ALICE, client="g1")
    reply = subscribed(a2, 1, "room.g")
    own = a2.barrier()
    seen = marker(a2, "room.g", w)
    check("reconnect with the same client= within presence_grace: no LEAVE/JOIN for others",
          not [m for m in seen if m[0] in (JOIN, LEAVE)], seen)
    check("... and none for the reconnected connection either", not [m for m in own if m[0] in (JOIN, LEAVE)], own)
    check("... its SUBSCRIBED names the same client id", reply[2].get("client") == "g1", reply)
    _, p, _ = w.request([PRESENCE, 2, "room.g", {"counts": True}])
    check("... still one entry", p[2].get("clients") == 2, p)
    a2.drop()
    started = time.monotonic()
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE), timeout=6)
    took = time.monotonic() - started
    check("a lost connection leaves after presence_grace (2s)",
          ev[0] == LEAVE and ev[2]["client"] == "g1" and took >= 1.5, (ev, round(took, 2)))
    # A different user with the same client id is another entry.
    c = Ws(BOB, client="g1")
    subscribed(c, 1, "room.g")
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("same client id, other user: a new entry (JOIN)", ev[0] == JOIN and ev[2].get("user") == "bob", ev)
    c.close()
    w.close()


def users_level():
    w = watcher(BOB, "uw", "room.u", "users")
    t1, t2 = Ws(ALICE_INFO, client="t1"), Ws(ALICE_INFO, client="t2")
    subscribed(t1, 1, "room.u")
    subscribed(t2, 1, "room.u")
    anon = Ws(client="anon1")
    subscribed(anon, 1, "room.u")
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("user-level JOIN once for a user's first entry, with info",
          ev == [JOIN, "room.u", {"user": "alice", "info": {"name": "Alice"}}], ev)
    seen = marker(t2, "room.u", w) + marker(anon, "room.u", w)
    check("no user event for the second entry or an anonymous one", not [m for m in seen if m[0] in (JOIN, LEAVE)], seen)
    _, p, _ = w.request([PRESENCE, 2, "room.u", {"counts": True}])
    check("counts: 4 clients (bob, t1, t2, anonymous), 2 users", p[2] == {"clients": 4, "users": 2}, p)
    for ws in (t1, anon):
        ws.request([UNSUBSCRIBE, 3, "room.u"])
        seen = marker(ws, "room.u", w)
        ws.close(1000)
    check("no user LEAVE while the user's other entry stays", not [m for m in seen if m[0] in (JOIN, LEAVE)], seen)
    t2.send([UNSUBSCRIBE, 5, "room.u"])
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("user-level LEAVE with the last entry", ev == [LEAVE, "room.u", {"user": "alice", "info": {"name": "Alice"}}], ev)
    t2.close()
    w.close()
    try:
        Ws(BIG_INFO, expect_status=401)
        check("a token with client info over max_presence_info_bytes: 401", True)
    except AssertionError as err:
        check("a token with client info over max_presence_info_bytes: 401", False, err)
    for cid in ("a" * 65, "bad.id", ""):
        try:
            ws = Ws(ALICE, client=cid, expect_status=400)
            check(f"client={cid[:10]!r} is 400 invalid_option", "invalid_option" in ws.head + ws.buf.decode("latin-1"),
                  ws.head)
        except AssertionError as err:
            check(f"client={cid[:10]!r} is 400", False, err)


def disconnects():
    w = watcher(BOB, "dw", "room.d")
    d = Ws(ALICE, client="d1")
    subscribed(d, 1, "room.d")
    w.until(lambda m: m[0] == JOIN)
    status, headers, body = http_json("POST", "/v1/disconnect", {"client": "d1"}, ADMIN)
    check("POST /v1/disconnect by client: 200 {disconnected: 1}", status == 200 and body == {"disconnected": 1}, (status, body))
    check("admin answers carry Cache-Control: no-store", headers.get("cache-control") == "no-store", headers)
    try:
        d.until(lambda m: False)
        check("close 4007", False, "no close")
    except Closed as c:
        check("close 4007 'disconnected by the server'", (c.code, c.reason) == (4007, "disconnected by the server"),
              (c.code, c.reason))
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE), timeout=1.5)
    check("a disconnected entry leaves at once (no grace)", ev[0] == LEAVE and ev[2]["client"] == "d1", ev)
    e1, e2 = Ws(ALICE, client="e1"), Ws(ALICE, client="e2")
    # No request first: a connection counts from its 101 on (http-api.md).
    status, _, body = http_json("POST", "/v1/disconnect", {"user": "alice", "code": 4100, "reason": "moved"}, ADMIN)
    check("disconnect by user with a code: counts both connections", status == 200 and body == {"disconnected": 2},
          (status, body))
    for ws in (e1, e2):
        try:
            ws.until(lambda m: False)
        except Closed as c:
            check("close 4100 with the operator's reason", (c.code, c.reason) == (4100, "moved"), (c.code, c.reason))
    f = Ws(ALICE, client="f1")
    status, _, body = http_json("POST", "/v1/disconnect", {"client": "f1", "code": 4500}, ADMIN)
    try:
        f.until(lambda m: False)
    except Closed as c:
        check("an application code without reason: empty reason", (c.code, c.reason) == (4500, ""), (c.code, c.reason))
    for user in ("", "u" * 1025):
        status, _, body = http_json("POST", "/v1/disconnect", {"user": user}, ADMIN)
        check(f"disconnect user of {len(user)} bytes: 400 invalid_option",
              status == 400 and is_error_body(body, "invalid_option"), (status, body))
    status, _, body = http_json("POST", "/v1/disconnect", {"user": "u" * 1024, "reason": "r" * 123}, ADMIN)
    check("disconnect user of 1024 bytes, reason of 123 bytes: 200", status == 200 and body == {"disconnected": 0},
          (status, body))
    status, _, body = http_json("POST", "/v1/disconnect", {"client": "nobody"}, ADMIN)
    check("disconnect matching nothing: {disconnected: 0}", status == 200 and body == {"disconnected": 0}, (status, body))
    cases = [
        ({"client": "a", "user": "b"}, 400, "invalid_option", "both client and user"),
        ({}, 400, "invalid_option", "neither client nor user"),
        ({"client": "bad id"}, 400, "invalid_option", "a bad client id"),
        ({"client": "a", "code": 4050}, 400, "invalid_option", "code 4050"),
        ({"client": "a", "code": 1000}, 400, "invalid_option", "code 1000"),
        ({"client": "a", "reason": "x" * 124}, 400, "invalid_option", "a 124-byte reason"),
        ({"client": "a", "extra": 1}, 400, "invalid_option", "an unknown key"),
        ([1], 400, "malformed", "not an object"),
        (b"{nope", 400, "malformed", "not JSON"),
    ]
    for body_in, want_status, code, what in cases:
        status, _, body = http_json("POST", "/v1/disconnect", body_in, ADMIN)
        check(f"disconnect with {what}: {want_status} {code}", status == want_status and is_error_body(body, code),
              (status, body))
    status, headers, body = http_json("POST", "/v1/disconnect", {"client": "a"}, ADMIN + "x")
    check("disconnect with an invalid token: 401 with WWW-Authenticate",
          status == 401 and is_error_body(body, "unauthorized") and "www-authenticate" in headers, (status, body))
    status, headers, body = http_json("POST", "/v1/disconnect", {"client": "a"})
    check("disconnect without credentials on a broker with anonymous grants: anonymous, 403 forbidden",
          status == 403 and is_error_body(body, "forbidden"), (status, body))
    status, _, body = http_json("POST", "/v1/disconnect", {"client": "a"}, ALICE)
    check("disconnect without the admin grant: 403 forbidden", status == 403 and is_error_body(body, "forbidden"),
          (status, body))
    w.close()


def sse_lines(sock, deadline):
    """Reads SSE events ('event', data) from a chunked stream until the deadline."""
    raw = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        raw += chunk
        yield raw


def fallbacks():
    q = urllib.parse.urlencode({"sub": "room.s", "join_leave": "true", "client": "s1", "token": ALICE_INFO})
    sock = socket.create_connection((HOST, PORT), timeout=WAIT)
    sock.sendall(f"GET /v1/sse?{q} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())

    def events_until(pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        for raw in sse_lines(sock, deadline):
            text = raw.decode(errors="replace")
            evs = []
            for block in text.split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":"))
                if "event" in fields and "data" in fields:
                    # strip chunk-size lines that may sit inside a block
                    data = fields["data"].split("\r\n")[0]
                    try:
                        evs.append((fields["event"], json.loads(data)))
                    except ValueError:
                        pass
            if pred(evs):
                return evs
        raise TimeoutError("sse: no matching events")

    evs = events_until(lambda e: any(k == "join" for k, _ in e))
    joins = [d for k, d in evs if k == "join"]
    check("SSE join event of its own entry, as the doc's JSON",
          joins and joins[0] == {"topic": "room.s", "client": "s1", "user": "alice", "info": {"name": "Alice"}}, evs)
    b = Ws(BOB, client="sb")
    subscribed(b, 1, "room.s")
    b.close(1000)
    evs = events_until(lambda e: any(k == "leave" for k, _ in e))
    kinds = [(k, d.get("client")) for k, d in evs if k in ("join", "leave")]
    check("SSE join then leave of another client", kinds == [("join", "sb"), ("leave", "sb")], kinds)
    http_json("POST", "/v1/disconnect", {"client": "s1"}, ADMIN)
    evs = events_until(lambda e: any(k == "close" for k, _ in e))
    closes = [d for k, d in evs if k == "close"]
    check("SSE close event 4007 after a disconnect", closes == [{"code": 4007, "reason": "disconnected by the server"}], closes)
    sock.close()

    base = {"sub": "room.l", "join_leave": "true", "client": "l1", "token": ALICE, "timeout": "0"}
    status, _, first = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(base))
    kinds = [e.get("type") for e in first.get("events", [])] if status == 200 else []
    check("poll: subscribed then own join", status == 200 and kinds == ["subscribed", "join"], (status, first))
    join = [e for e in first.get("events", []) if e.get("type") == "join"]
    check("poll join event: type, topic, client, user, after",
          join == [{"type": "join", "topic": "room.l", "client": "l1", "user": "alice", "after": 0}], join)
    http_req("POST", "/v1/publish/room.l", b"m1", ALICE)
    c = Ws(BOB, client="lc")
    subscribed(c, 1, "room.l")
    c.send([PUBLISH, 2, "room.l", b"m2"])
    c.until(lambda m: m[0] == PUBLISHED)
    c.close(1000)
    params = dict(base, session=first.get("session", ""), cursor=first.get("cursor", ""), timeout="5")
    deadline = time.monotonic() + WAIT
    msgs, evs = [], []
    while time.monotonic() < deadline and not any(e.get("type") == "leave" for e in evs):
        status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(params))
        for e in ans.get("events", []):
            e = dict(e)
            if "after" in e:
                e["after"] += len(msgs)
            evs.append(e)
        msgs += ans.get("messages", [])
        params["cursor"] = ans.get("cursor", params["cursor"])
    order = [("msg", m.get("data_base64")) for m in msgs]
    for e in reversed(evs):
        if e.get("type") in ("join", "leave"):
            order.insert(e["after"], (e["type"], e.get("client")))
    status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(
        {"sub": "plain.z", "join_leave": "users", "token": ALICE, "timeout": "0"}))
    check("poll join_leave on a sub without presence: subscribed without it",
          status == 200 and [e.get("type") for e in ans.get("events", [])] == ["subscribed"], (status, ans))
    status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(
        {"sub": "room.lu", "join_leave": "users", "token": ALICE_INFO, "timeout": "0"}))
    joins = [e for e in ans.get("events", []) if e.get("type") == "join"]
    check("poll user-level join: no client, user and info",
          joins == [{"type": "join", "topic": "room.lu", "user": "alice", "info": {"name": "Alice"}, "after": 0}], ans)
    status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode({"sub": "room.l", "client": "a.b", "token": ALICE}))
    check("poll with a bad client=: 400 invalid_option", status == 400 and is_error_body(ans, "invalid_option"), (status, ans))
    check("poll: m1, join, m2, leave in order via 'after'",
          order == [("msg", "bTE="), ("join", "lc"), ("msg", "bTI="), ("leave", "lc")], order)


def server_api():
    s = Ws(ALICE_INFO, client="h1")
    subscribed(s, 1, "room.h")
    status, headers, body = http_json("GET", "/v1/presence/room.h", token=ADMIN)
    check("GET /v1/presence/{topic}", status == 200 and body == {
        "topic": "room.h", "clients": 1, "users": 1,
        "entries": [{"client": "h1", "user": "alice", "info": {"name": "Alice"}}]}, (status, body))
    status, _, body = http_json("GET", "/v1/presence/room.h/stats", token=ADMIN)
    check("GET /v1/presence/{topic}/stats", status == 200 and body == {"topic": "room.h", "clients": 1, "users": 1},
          (status, body))
    for path, want_status, code in (("/v1/presence/plain.x", 404, "presence_disabled"),
                                    ("/v1/presence/room.*", 400, "invalid_topic"),
                                    ("/v1/presence/plain.x/stats", 404, "presence_disabled")):
        status, _, body = http_json("GET", path, token=ADMIN)
        check(f"GET {path}: {want_status} {code}", status == want_status and is_error_body(body, code), (status, body))
    status, headers, body = http_json("GET", "/v1/presence/room.h/stats?x=1&x=2", token=ADMIN)
    check("presence: the query string is ignored; JSON content type",
          status == 200 and body.get("clients") == 1 and headers.get("content-type", "").startswith("application/json"),
          (status, body, headers.get("content-type")))
    for method, path in (("GET", "/v1/disconnect"), ("POST", "/v1/history/hist.a"), ("GET", "/v1/publish")):
        status, _, body = http_json(method, path, token=ADMIN)
        check(f"{method} {path}: 405 method_not_allowed", status == 405 and is_error_body(body, "method_not_allowed"),
              (status, body))
    status, _, body = http_json("GET", "/v1/presence/room.h", token=ALICE)
    check("presence without the admin grant: 403", status == 403 and is_error_body(body, "forbidden"), (status, body))
    status, _, body = http_json("POST", "/v1/presence/room.h", token=ADMIN)
    check("POST /v1/presence: 405 method_not_allowed", status == 405 and is_error_body(body, "method_not_allowed"),
          (status, body))
    s.close()

    # History.
    payloads = [pack({"from": "ann", "text": "hi"}), b"\x00\x01\x02", b"", pack(2**60)]
    seqs = []
    for p in payloads:
        status, _, body = http_json("POST", "/v1/publish/hist.a", p, ALICE)
        seqs.append(body.get("seq"))
    status, _, h = http_json("GET", "/v1/history/hist.a", token=ADMIN)
    msgs = h.get("messages", []) if status == 200 else []
    rendered = [m.get("payload", ("b64", m.get("payload_base64"))) for m in msgs]
    check("history renders payloads: JSON when convertible, else base64",
          rendered == [{"from": "ann", "text": "hi"}, ("b64", "AAEC"), ("b64", ""), ("b64", base64.b64encode(payloads[3]).decode())],
          rendered)
    check("history has topic, epoch string, seq, no recovered without since",
          h.get("topic") == "hist.a" and isinstance(h.get("epoch"), str) and h.get("seq") == seqs[-1]
          and "recovered" not in h, h)
    epoch = h.get("epoch")
    status, _, h2 = http_json("GET", f"/v1/history/hist.a?since={epoch}:1&limit=2", token=ADMIN)
    check("history since E:1 limit 2: seqs 2,3, recovered",
          [m["seq"] for m in h2.get("messages", [])] == [2, 3] and h2.get("recovered") is True, h2)
    status, _, h3 = http_json("GET", f"/v1/history/hist.a?since={epoch}:4", token=ADMIN)
    check("history since the latest: no messages, recovered", h3.get("messages") == [] and h3.get("recovered") is True, h3)
    status, _, h4 = http_json("GET", "/v1/history/hist.a?since=1:0", token=ADMIN)
    check("history since another epoch: recovered false, the oldest kept",
          h4.get("recovered") is False and [m["seq"] for m in h4.get("messages", [])] == [1, 2, 3, 4], h4)
    status, _, h5 = http_json("GET", f"/v1/history/hist.a?since={epoch}:9", token=ADMIN)
    check("history since a seq ahead: recovered false", h5.get("recovered") is False, h5)
    status, _, h6 = http_json("GET", "/v1/history/hist.a?limit=2", token=ADMIN)
    check("history limit=2 without since: the newest two, oldest first",
          [m["seq"] for m in h6.get("messages", [])] == [3, 4], h6)
    status, _, h7 = http_json("GET", "/v1/history/hist.a?payload=base64&limit=1", token=ADMIN)
    check("history payload=base64", [set(m) for m in h7.get("messages", [])] == [{"seq", "time", "payload_base64"}], h7)
    status, _, h8 = http_json("GET", "/v1/history/hist.never?since=5:5", token=ADMIN)
    check("history of an unknown topic: epoch \"0\", seq 0, no messages, recovered false",
          status == 200 and h8.get("epoch") == "0" and h8.get("seq") == 0 and h8.get("messages") == []
          and h8.get("recovered") is False, (status, h8))
    for query, code in (("limit=0", "invalid_option"), ("limit=1001", "invalid_option"), ("since=5", "invalid_option"),
                        ("foo=1", "invalid_option"), ("limit=1&limit=2", "invalid_option"),
                        ("payload=json", "invalid_option")):
        status, _, body = http_json("GET", f"/v1/history/hist.a?{query}", token=ADMIN)
        check(f"history ?{query}: 400 {code}", status == 400 and is_error_body(body, code), (status, body))
    status, _, body = http_json("GET", "/v1/history/hist.*", token=ADMIN)
    check("history of a pattern: 400 invalid_topic", status == 400 and is_error_body(body, "invalid_topic"), (status, body))

    # Batch publish.
    batch = {"messages": [
        {"topic": "room.b", "payload": {"from": "ann", "text": "hi"}},
        {"topic": "secret.x", "payload": 1},
        {"topic": "room.b", "payload_base64": "AAEC"},
        {"topic": "room.b", "payload_base64": "***"},
        {"topic": "room.*", "payload": 1},
        {"topic": "room.b", "payload": 1, "payload_base64": "AA=="},
        {"topic": "room.b"},
        {"topic": "room.b", "payload": 1, "retain": "yes"},
        {"topic": "room.b", "payload": 1, "retain": True},
        {"topic": "room.b", "payload": 1, "extra": 1},
        5,
        {"payload": 1},
    ]}
    status, _, body = http_json("POST", "/v1/publish", batch, ALICE)
    res = body.get("results", []) if status == 200 else []
    got = [r.get("seq", r.get("error")) for r in res]
    check("batch publish: mixed results in request order",
          got == [1, "forbidden", 2, "malformed", "invalid_topic", "malformed", "malformed", "invalid_option",
                  "invalid_option", "invalid_option", "malformed", "invalid_topic"], (status, got))
    check("batch error results have exactly error and message",
          all(set(r) == {"seq"} or set(r) == {"error", "message"} for r in res), res)
    for body_in, want_status, code, what in (
            ({"messages": []}, 200, None, "an empty batch"),
            ({"messages": [{"topic": "room.b", "payload": 1}] * 1001}, 413, "payload_too_large", "1001 messages"),
            ({"messages": [], "x": 1}, 400, "invalid_option", "an extra key"),
            ({"msgs": []}, 400, "invalid_option", "no messages key"),
            ([], 400, "malformed", "a JSON array"),
            (b"nope", 400, "malformed", "not JSON")):
        status, _, body = http_json("POST", "/v1/publish", body_in, ALICE)
        ok = (status == 200 and body == {"results": []}) if code is None else (status == want_status and is_error_body(body, code))
        check(f"batch with {what}: {want_status} {code or ''}", ok, (status, body))
    status, _, body = http_json("POST", "/v1/publish", {"messages": []}, ALICE + "x")
    check("batch with an invalid token: 401", status == 401 and is_error_body(body, "unauthorized"), (status, body))
    status, _, body = http_json("POST", "/v1/publish", {"messages": [{"topic": "room.b", "payload": 1},
                                                                   {"topic": "plain.b", "payload": 1}]})
    check("batch without credentials: the anonymous grants apply per message",
          status == 200 and [("seq" in r) or r.get("error") for r in body.get("results", [])] == [True, "forbidden"],
          (status, body))

    status, _, body = http_json("GET", "/v1/nothing", token=ADMIN)
    check("unknown path: 404 not_found", status == 404 and is_error_body(body, "not_found"), (status, body))
    status, _, body = http_json("GET", "/v1/topics?pattern=hist.a", token=ADMIN)
    check("GET /v1/topics lists hist.a with its position",
          status == 200 and body.get("next") is None
          and [(t["topic"], t["seq"], t["epoch"]) for t in body.get("topics", [])] == [("hist.a", 4, epoch)], body)


def cli_commands():
    s = Ws(ALICE_INFO, client="cli1")
    subscribed(s, 1, "room.c")
    anon = Ws(client="k3")
    subscribed(anon, 1, "room.c")
    code, out, err = cli("presence", "room.c", tok=ADMIN)
    lines = out.splitlines()
    check("tickwire presence: exit 0, header and one row per entry ('-' for no user, no info)",
          code == 0 and lines[:1] == ["topic room.c  clients 2  users 1"] and len(lines) == 4
          and lines[1].split() == ["CLIENT", "USER", "INFO"]
          and sorted(ln.split() for ln in lines[2:]) == [["cli1", "alice", '{"name":"Alice"}'], ["k3", "-", "-"]],
          (code, out, err))
    anon.close()
    e = Ws(HUGE_INT_INFO, client="bigcli")
    subscribed(e, 1, "room.ci")
    code, out, err = cli("presence", "room.ci", tok=ADMIN)
    want = "base64:" + base64.b64encode(pack({"n": 9007199254740993})).decode()
    check("tickwire presence: info that does not convert shows as base64:…",
          code == 0 and out.splitlines()[2:] and out.splitlines()[2].split() == ["bigcli", "erin", want], (code, out))
    e.close()
    code, out, err = cli("presence", "room.c", "--stats", tok=ADMIN)
    check("tickwire presence --stats: exit 0, counts", code == 0 and "clients 1" in out and "users 1" in out, (code, out))
    code, out, err = cli("presence", "room.c", "--json", tok=ADMIN)
    check("tickwire presence --json: the broker's answer on one line",
          code == 0 and len(out.splitlines()) == 1 and json.loads(out).get("clients") == 1, (code, out))
    code, out, err = cli("presence", "plain.x", tok=ADMIN)
    check("tickwire presence of a topic without presence: exit 1 naming 404 presence_disabled",
          code == 1 and "404" in err and "presence_disabled" in err, (code, err))
    code, out, err = cli("presence", "room.c", tok=ALICE)
    check("tickwire presence without the admin grant: exit 1 (403 forbidden)", code == 1 and "forbidden" in err, (code, err))
    code, out, err = cli("presence", "room.c", tok=ADMIN + "x")
    check("tickwire presence with an invalid token: exit 3 (401)", code == 3 and "401" in err, (code, err))
    code, out, err = cli("presence", "room.c")
    check("tickwire presence without a token, anonymous grants on: exit 1 (403)", code == 1 and "403" in err, (code, err))
    code, out, err = cli("history", "hist.a", "--limit", "2", tok=ADMIN)
    lines = out.splitlines()
    check("tickwire history: exit 0, header line, SEQ/TIME/PAYLOAD table",
          code == 0 and lines and lines[0].startswith("topic hist.a  epoch ") and lines[0].endswith("  seq 4")
          and lines[1].split() == ["SEQ", "TIME", "PAYLOAD"] and [ln.split()[0] for ln in lines[2:]] == ["3", "4"]
          and lines[3].split()[2].startswith("base64:")
          and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ln.split()[1]) for ln in lines[2:]),
          (code, out, err))
    code, _, err = cli("history", "hist.a", "--limit", "0", tok=ADMIN)
    check("tickwire history --limit 0: exit 2", code == 2, (code, err))
    code, _, err = cli("history", "hist.a", "--since", "12", tok=ADMIN)
    check("tickwire history --since 12: exit 2", code == 2, (code, err))
    code, _, err = cli("history", "hist.*", tok=ADMIN)
    check("tickwire history of a pattern: exit 1 (400 invalid_topic)", code == 1 and "invalid_topic" in err, (code, err))
    code, out, err = cli("topics", "hist.*", tok=ADMIN)
    lines = out.splitlines()
    check("tickwire topics: exit 0, TOPIC/SUBSCRIBERS/SEQ/EPOCH table",
          code == 0 and lines[0].split() == ["TOPIC", "SUBSCRIBERS", "SEQ", "EPOCH"] and lines[1].split()[:3] == ["hist.a", "0", "4"],
          (code, out, err))
    code, out, err = cli("topics", "room.*", "--limit", "1", tok=ADMIN)
    check("tickwire topics --limit 1: the last line is '(more topics follow: --after T)'",
          code == 0 and re.fullmatch(r"\(more topics follow: --after room\.\w+\)", out.splitlines()[-1]), (code, out))
    code, _, err = cli("topics", "room.*.", tok=ADMIN)
    check("tickwire topics with a bad pattern: exit 1 (invalid_pattern)", code == 1 and "invalid_pattern" in err, (code, err))
    s.close()


OVERLAP = ((3, "room.m", "clients"), (4, "room.*", True), (5, "room.>", "users"))


def subscribe_rules():
    a = Ws(ALICE, client="sr")
    subscribed(a, 1, "plain.y")
    _, reply, _ = a.request([SUBSCRIBE, 2, "plain.y", {"join_leave": True}])
    check("SUBSCRIBE check order: already_subscribed before presence_disabled",
          reply[0] == ERROR and reply[2] == 7, reply)
    n = Ws(NARROW)
    _, reply, _ = n.request([SUBSCRIBE, 1, "plain.y", {"join_leave": True}])
    check("SUBSCRIBE check order: forbidden before presence_disabled", reply[0] == ERROR and reply[2] == FORBIDDEN, reply)
    n.close()
    # Overlapping subscriptions merge per kind: each event once.
    for rid, pattern, kind in OVERLAP:
        subscribed(a, rid, pattern, {"join_leave": kind})
    a.barrier()
    b = Ws(BOB, client="mb")
    subscribed(b, 1, "room.m")
    seen = marker(b, "room.m", a)
    events = [m for m in seen if m[0] in (JOIN, LEAVE)]
    check("overlapping join_leave subscriptions: one client JOIN and one user JOIN",
          sorted(events, key=lambda m: "client" in m[2]) == [[JOIN, "room.m", {"user": "bob"}],
                                                              [JOIN, "room.m", {"client": "mb", "user": "bob"}]], events)
    b.close()
    # presence_full: max_presence_per_topic = 6 in run.sh's config.
    conns = [Ws(ALICE, client=f"full{i}") for i in range(7)]
    replies = []
    for ws in conns:
        _, reply, _ = ws.request([SUBSCRIBE, 1, "room.full"])
        replies.append(reply[0] if reply[0] != ERROR else reply[2])
    check("the 7th entry of a topic with max_presence_per_topic = 6: presence_full (17)",
          replies == [SUBSCRIBED] * 6 + [17], replies)
    again = Ws(ALICE, client="full0")
    _, reply, _ = again.request([SUBSCRIBE, 1, "room.full"])
    check("a connection whose key is already present is not refused when full", reply[0] == SUBSCRIBED, reply)
    for ws in conns + [again]:
        ws.close()
    a.close()
    for q, what in (("client=a&client=b", "client given twice"), ("foo=1", "another parameter")):
        try:
            ws = Ws.__new__(Ws)
            sock = socket.create_connection((HOST, PORT), timeout=WAIT)
            sock.sendall((f"GET /ws?{q}&token={ALICE} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = sock.recv(4096).decode("latin-1")
            sock.close()
            check(f"/ws with {what}: 400", head.startswith("HTTP/1.1 400"), head[:60])
        except OSError as err:
            check(f"/ws with {what}: 400", False, err)


def entry_lifecycle():
    w = watcher(BOB, "xw", "room.x")
    r = Ws(ALICE)
    reply = subscribed(r, 1, "room.x")
    cid = reply[2].get("client", "")
    check("without client= the broker picks 22 base64url characters",
          re.fullmatch(r"[A-Za-z0-9_-]{22}", cid) is not None, cid)
    r.close(1000)
    w.until(lambda m: m[0] == LEAVE)
    # Two connections with one key are one entry.
    k1, k2 = Ws(ALICE, client="same"), Ws(ALICE, client="same")
    subscribed(k1, 1, "room.x")
    subscribed(k2, 1, "room.x")
    seen = marker(k2, "room.x", w)
    joins = [m for m in seen if m[0] == JOIN]
    check("two connections with the same user and client id: one JOIN", len(joins) == 1, seen)
    _, p, _ = w.request([PRESENCE, 2, "room.x", {"counts": True}])
    check("... one entry", p[2].get("clients") == 2, p)
    k1.close(1000)
    k2.request([PING, 3])
    seen = marker(k2, "room.x", w)
    check("... closing one of them makes no LEAVE", not [m for m in seen if m[0] in (JOIN, LEAVE)], seen)
    # REFRESH keeps the user and info the connection started with.
    _, ref, _ = k2.request([5, 4, BOB])
    _, p, _ = w.request([PRESENCE, 5, "room.x"])
    mine = [e for e in p[2].get("entries", []) if e.get("client") == "same"]
    check("REFRESH keeps the entry's user", ref[0] == 17 and mine == [{"client": "same", "user": "alice"}], (ref, mine))
    k2.close(1000)
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE))
    check("... closing the last one: LEAVE at once", ev[0] == LEAVE and ev[2]["client"] == "same", ev)
    # A client close with another code than 1000 keeps the entry for the grace period.
    g = Ws(ALICE, client="c4000")
    subscribed(g, 1, "room.x")
    w.until(lambda m: m[0] == JOIN)
    started = time.monotonic()
    g.close(4000)
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE), timeout=6)
    took = time.monotonic() - started
    check("a client close 4000 leaves after the grace period, not at once",
          ev[0] == LEAVE and took >= 1.5, (ev, round(took, 2)))
    # An UNSUBSCRIBE removes the entry at once even with a wildcard subscription left.
    u = Ws(ALICE, client="unsub")
    subscribed(u, 1, "room.*")
    subscribed(u, 2, "room.x")
    w.until(lambda m: m[0] == JOIN)
    u.request([UNSUBSCRIBE, 3, "room.x"])
    _, ev, _ = w.until(lambda m: m[0] in (JOIN, LEAVE), timeout=1.5)
    check("UNSUBSCRIBE of the exact topic: LEAVE at once though a wildcard matches", ev[0] == LEAVE, ev)
    u.close()
    w.close()


def json_payloads():
    w = Ws(ALICE, client="jp")
    subscribed(w, 1, "hist.j")
    status, _, body = http_json("POST", "/v1/publish", {"messages": [
        {"topic": "hist.j", "payload": {"b": 1, "a": 2.5, "c": -3, "d": [True, None, "x"]}},
        {"topic": "hist.j", "payload": 300}]}, ALICE)
    _, m1, _ = w.until(lambda m: m[0] == MESSAGE)
    _, m2, _ = w.until(lambda m: m[0] == MESSAGE)
    want = (b"\x84\xa1a\xcb" + struct.pack(">d", 2.5) + b"\xa1b\x01\xa1c\xfd\xa1d\x93\xc3\xc0\xa1x")
    check("batch JSON payload: MessagePack with sorted keys, float 64, smallest ints", m1[5] == want,
          (m1[5].hex(" "), want.hex(" ")))
    check("batch JSON integer 300: uint 16", m2[5] == b"\xcd\x01\x2c", m2[5].hex(" "))
    status, _, h = http_json("GET", "/v1/history/hist.j", token=ADMIN)
    check("history shows the batch payload as the same JSON",
          [m.get("payload") for m in h.get("messages", [])] == [{"a": 2.5, "b": 1, "c": -3, "d": [True, None, "x"]}, 300], h)
    status, _, h = http_json("GET", "/v1/history/room.x", token=ADMIN)
    check("history of a topic that keeps no history: 200, no messages",
          status == 200 and h.get("messages") == [], (status, h))
    w.close()
    params = {"sub": "room.pd", "client": "pd1", "token": ALICE, "timeout": "0"}
    status, _, first = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(params))
    http_json("POST", "/v1/disconnect", {"client": "pd1", "code": 4101, "reason": "bye"}, ADMIN)
    params.update(session=first.get("session", ""), timeout="5")
    status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(params))
    closes = [e for e in ans.get("events", []) if e.get("type") == "close"]
    check("a disconnected poll session answers a close event with the code and reason",
          closes == [{"type": "close", "code": 4101, "reason": "bye"}], ans)


def info_rendering():
    e = Ws(HUGE_INT_INFO, client="big")
    subscribed(e, 1, "room.i")
    _, p, _ = e.request([PRESENCE, 2, "room.i"])
    check("PRESENCE shows a token's info with an integer over 2^53 exactly",
          p[2].get("entries") == [{"client": "big", "user": "erin", "info": {"n": 9007199254740993}}], p)
    status, _, body = http_json("GET", "/v1/presence/room.i", token=ADMIN)
    want = base64.b64encode(pack({"n": 9007199254740993})).decode()
    check("GET /v1/presence: info that does not convert to JSON goes as info_base64",
          status == 200 and body.get("entries") == [{"client": "big", "user": "erin", "info_base64": want}], (status, body))
    status, _, ans = http_json("GET", "/v1/poll?" + urllib.parse.urlencode(
        {"sub": "room.i", "join_leave": "true", "client": "big2", "token": HUGE_INT_INFO, "timeout": "0"}))
    joins = [ev for ev in ans.get("events", []) if ev.get("type") == "join"]
    check("poll join: info that does not convert goes as info_base64",
          joins == [{"type": "join", "topic": "room.i", "client": "big2", "user": "erin", "info_base64": want, "after": 0}],
          ans)
    e.close()


GROUPS = (doc_byte_examples, subscribe_rules, join_leave_values, presence_requests, ordering, grace, users_level, disconnects,
              fallbacks, entry_lifecycle, info_rendering, json_payloads, server_api, cli_commands)
ONLY = os.environ.get("OUTSIDE_CLIENT_ONLY", "")
for group in GROUPS:
    if not ONLY or group.__name__ in ONLY.split(","):
        guarded(group)

print(f"{'FAIL' if FAILURES else 'PASS'}: outside client, {len(FAILURES)} failed check(s)")
sys.exit(1 if FAILURES else 0)
