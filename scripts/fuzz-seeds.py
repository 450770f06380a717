#!/usr/bin/env python3
"""Regenerates the committed seed corpus of the fuzz targets (fuzz/corpus/)
and the config_file dictionary (fuzz/dict/) from their sources, so that no
seed is copied by hand:

* docs/protocol.md: every hex example (tested against the real encoders and
  decoders by protocol/tests/doc_examples.rs). MessagePack messages seed
  client_message and server_message, and, wrapped into WebSocket frames the
  way a client (masked) or the broker (unmasked) sends them, ws_frame; the
  frames written in the document seed ws_frame as they are. Every topic and
  pattern quoted in section 9 seeds topic_pattern.
* tests/tests/*.rs: the raw frames the end-to-end tests send (send_raw).
* docs/configuration.md: the TOML examples, one file per setting with its
  documented default, and the dictionary of setting keys.
* docs/*.md and tests/tests/*.rs: every /v1/publish/ request target.
* docs/http-api.md: every JSON body (batch publish, disconnect, answers),
  seeding server_api_json as a batch and as a disconnect, and their
  disconnects as control messages of presence_wire; docs and tests: every
  /v1/history query, every client= id and client info (`info`).
* The presence entries of docs/http-api.md written as the Redis presence
  events of docs/cluster.md (presence_wire).

Usage: scripts/fuzz-seeds.py (from anywhere). Deletes and rewrites
fuzz/corpus/*/ and fuzz/dict/; seed files are named after a hash of their
content, so reruns produce the same tree.
"""

import hashlib
import json
import pathlib
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
DICT = ROOT / "fuzz" / "dict"
TARGETS = [
    "ws_frame",
    "client_message",
    "server_message",
    "topic_pattern",
    "config_file",
    "http_publish_query",
    "server_api_json",
    "presence_wire",
]

# ws_frame input prefix: role flags (0 server, 1 client), the message size
# limit minus one (big endian), the chunking seed.
SERVER_ROLE, CLIENT_ROLE = 0, 1
MAX_LIMIT = (0xFF, 0xFF)
# The masking key of the client frame example in docs/protocol.md.
MASK_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def read(rel):
    return (ROOT / rel).read_text(encoding="utf-8")


def code_blocks(markdown):
    """The bodies of the fenced code blocks, with their info string."""
    return re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.S | re.M)


def hex_examples(markdown):
    line = re.compile(r"^[0-9a-f]{2}( [0-9a-f]{2})*$")
    for _, body in code_blocks(markdown):
        for text in body.splitlines():
            if line.match(text.strip()):
                yield bytes.fromhex(text.strip())


def frame(opcode, payload, masked):
    """One final WebSocket frame, as protocol/src/ws.rs writes it."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n <= 125:
        header = bytes([0x80 | opcode, mask_bit | n])
    elif n <= 0xFFFF:
        header = bytes([0x80 | opcode, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    body = bytes(b ^ MASK_KEY[i % 4] for i, b in enumerate(payload))
    return header + MASK_KEY + body


def ws_seed(role, stream, seed=0):
    return bytes([role, *MAX_LIMIT, seed]) + stream


def frame_role(data):
    """The decoding role for a frame: masked frames go to the broker."""
    return SERVER_ROLE if len(data) > 1 and data[1] & 0x80 else CLIENT_ROLE


def protocol_seeds(seeds):
    doc = read("docs/protocol.md")
    for data in hex_examples(doc):
        first = data[0]
        if 0x90 <= first <= 0x9F and len(data) > 1:
            kind = data[1]
            # Client types 1-6, broker types 11-17; others feed both.
            if kind <= 10:
                seeds["client_message"].add(data)
            if kind > 6:
                seeds["server_message"].add(data)
            masked = kind <= 10
            seeds["ws_frame"].add(
                ws_seed(SERVER_ROLE if masked else CLIENT_ROLE, frame(0x2, data, masked))
            )
        elif 0x80 <= first <= 0x8F:
            seeds["ws_frame"].add(ws_seed(frame_role(data), data))
            seeds["ws_frame"].add(ws_seed(frame_role(data), data, seed=7))

    section = doc.split("## 9.", 1)[-1].split("\n## ", 1)[0]
    quoted = re.findall(r"`([^`\s]+)`", section)
    names = [q for q in dict.fromkeys(quoted) if re.fullmatch(r"[\w.*>:@~-]+", q)]
    seeds["topic_pattern"].add("\n".join(names).encode())
    for i in range(0, len(names) - 1, 2):
        seeds["topic_pattern"].add(f"{names[i]}\n{names[i + 1]}".encode())


def byte_value(expr):
    """An element of a Rust byte array: hex, decimal, `a | b`."""
    value = 0
    for part in expr.split("|"):
        value |= int(part.strip(), 0)
    return value


def test_frame_seeds(seeds):
    array = re.compile(r"send_raw\(&\[([0-9a-fA-Fx|,\s]+)\]\)")
    for path in sorted((ROOT / "tests" / "tests").glob("*.rs")):
        for elements in array.findall(path.read_text(encoding="utf-8")):
            data = bytes(byte_value(e) for e in elements.split(",") if e.strip())
            seeds["ws_frame"].add(ws_seed(frame_role(data), data))


def config_seeds(seeds, keys):
    doc = read("docs/configuration.md")
    for info, body in code_blocks(doc):
        if info == "toml":
            seeds["config_file"].add(body.encode())
    row = re.compile(r"^\| `--[\w-]+` \| `\w+` \| `(\w+)` \| `?([^|`]*)`? \|", re.M)
    for key, default in row.findall(doc):
        keys.append(key)
        seeds["config_file"].add(f'{key} = "{default.strip()}"\n'.encode())


def http_seeds(seeds):
    target = re.compile(r"/v1/publish/[^\s\"`')\\,]*")
    sources = sorted((ROOT / "docs").glob("*.md")) + sorted(
        (ROOT / "tests" / "tests").glob("*.rs")
    )
    for path in sources:
        for found in target.findall(path.read_text(encoding="utf-8")):
            seeds["http_publish_query"].add(found.encode())


def json_bodies(markdown):
    """Every JSON object written in a code block: the whole block or the
    body after an HTTP head."""
    for _, body in code_blocks(markdown):
        for part in [body] + body.split("\n\n")[1:]:
            try:
                value = json.loads(part)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def msgpack(value):
    """The MessagePack form of small JSON values (as json_to_msgpack
    writes them, short forms only)."""
    if value is None:
        return b"\xc0"
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int) and 0 <= value < 128:
        return bytes([value])
    if isinstance(value, str) and len(value.encode()) < 32:
        return bytes([0xA0 | len(value.encode())]) + value.encode()
    if isinstance(value, list) and len(value) < 16:
        return bytes([0x90 | len(value)]) + b"".join(msgpack(v) for v in value)
    if isinstance(value, dict) and len(value) < 16:
        items = sorted(value.items())
        return bytes([0x80 | len(items)]) + b"".join(msgpack(k) + msgpack(v) for k, v in items)
    return b"\xc0"


def server_api_seeds(seeds):
    doc = read("docs/http-api.md")
    api, wire = seeds["server_api_json"], seeds["presence_wire"]
    for value in json_bodies(doc):
        body = json.dumps(value, separators=(",", ":")).encode()
        api.add(b"\x00" + body)
        api.add(b"\x01" + body)
        if "info" in value:
            wire.add(b"\x03" + json.dumps(value["info"]).encode())
        for key, kind in (("client", "C"), ("user", "U")):
            if isinstance(value.get(key), str) and ("code" in value or "reason" in value):
                target = value[key].encode()
                reason = value.get("reason", "").encode()
                code = value.get("code", 4007)
                wire.add(b"\x01" + f"D {kind} {code} {len(target)}\n".encode() + target + reason)
        for entry in value.get("entries", []):
            user = entry.get("user")
            length = str(len(user.encode())) if user else "-"
            info = msgpack(entry["info"]) if "info" in entry else b""
            for kind in "JL":
                head = f"P {kind} {int(bool(user))} {entry['client']} {length}\n".encode()
                wire.add(b"\x00" + head + (user or "").encode() + info)
    sources = sorted((ROOT / "docs").glob("*.md")) + sorted(
        (ROOT / "tests" / "tests").glob("*.rs")
    )
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for query in re.findall(r"/v1/history/[^\s?\"`']*\?([^\s\"`')]+)", text):
            api.add(b"\x02" + query.encode())
        for client in re.findall(r"[?&]client=([\w%-]*)", text):
            wire.add(b"\x02" + client.encode())
        for info in re.findall(r"--info '([^']*)'", text):
            wire.add(b"\x03" + info.encode())


def write(seeds, keys):
    for target in TARGETS:
        out = CORPUS / target
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for data in sorted(seeds[target]):
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(seeds[target])} seeds")
    shutil.rmtree(DICT, ignore_errors=True)
    DICT.mkdir(parents=True)
    words = [f'"{k}"' for k in dict.fromkeys(keys)]
    words += ['"[[topic]]"', '"pattern"', '"history_messages"', '"history_bytes"']
    words += ['"history_age"', '"retain"', '"client_retain"', '"slow_consumer"']
    words += ['"KiB"', '"MiB"', '"GiB"', '"GB"', '"ms"', '"s"', '"m"', '"h"']
    # Boundary values for the numeric settings: 0, u32::MAX, usize::MAX.
    words += ['"0"', '"4294967295"', '"18446744073709551615"']
    (DICT / "config_file.dict").write_text("\n".join(words) + "\n", encoding="utf-8")


def main():
    seeds = {target: set() for target in TARGETS}
    keys = []
    protocol_seeds(seeds)
    test_frame_seeds(seeds)
    config_seeds(seeds, keys)
    http_seeds(seeds)
    server_api_seeds(seeds)
    empty = [t for t in TARGETS if not seeds[t]]
    if empty:
        raise SystemExit(f"no seeds found for {', '.join(empty)}: did a source move?")
    write(seeds, keys)


if __name__ == "__main__":
    main()
