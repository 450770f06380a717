#!/usr/bin/env python3
"""Cluster benchmarks (issue 11): what `serve --cluster` costs, measured.

One command, from the repository root:

    python3 scripts/cluster-bench.py

builds the release binary (`cargo build --release -p tickwire-cli --bins`),
starts one `redis-server` (127.0.0.1, a free port, no persistence) and
`tickwire serve` nodes on 127.0.0.1:0, runs `tickwire bench fanout` in each
scenario below, reads the CPU time of Redis (`INFO cpu`: used_cpu_user +
used_cpu_sys) and of every node (/proc/PID/stat: utime + stime) just
before and after each run, Redis' `INFO commandstats` (reset before each
run), and prints one table row per run, then the derived costs.

Scenarios (128-byte payloads; every run is bounded: --duration plus a 2 s
drain):

* publish (a): publisher and 10 subscribers on one node, the node without
  `--cluster`, with `--cluster`, and with `--cluster` plus a history policy
  (`[[topic]] pattern = "bench.>"`, `history_messages = 100`): at a fixed
  5000 msgs/s (latency percentiles) and at max rate (throughput).
* fanout (b): 300 subscribers at a fixed 1000 msgs/s (300k deliveries/s),
  publisher on node 1, cluster mode: every subscriber on node 1 vs spread
  round-robin over 3 nodes; and, for reference, one node without
  `--cluster`.
* Redis cost (c): 8 subscribers at a fixed 10000 msgs/s, cluster mode,
  all on node 1 vs one on each of 8 nodes: the difference, divided by 7,
  is what each more subscribed node costs Redis per publish (one more
  message sent) and costs the nodes (one more message received from
  Redis). Every row also shows Redis CPU per million publishes and per
  million deliveries.

Runs of one group alternate (A, B, C, A, B, C, ...) so that load from other
processes on the machine spreads over all variants; `uptime`'s load
average is printed next to every run. By default the nodes are pinned to
CPU 0 and Redis and the load tool to CPU 1 (`taskset`), like the
single-node benchmarks in docs/benchmarks.md; `--no-pin` leaves placement
to the scheduler.

Options: --runs N (default 2), --duration 4s, --only publish,fanout,redis,
--bin PATH (skip the build), --json FILE (every run's raw figures).

Nothing but Python 3's standard library, `redis-server` on the PATH
(Debian: apt-get install redis-server) and, for pinning, `taskset`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The per-client limits are raised as in docs/benchmarks.md: these runs
# measure the broker, and the load tool publishes from one connection.
LIMITS = [
    "--publish-rate", "100000000", "--publish-burst", "100000000",
    "--publish-bytes-rate", "64GiB", "--publish-bytes-burst", "64GiB",
    "--max-connections-per-ip", "1000000",
    "--connection-rate-per-ip", "1000000", "--connection-burst-per-ip", "1000000",
]
HISTORY_TOML = '[[topic]]\npattern = "bench.>"\nhistory_messages = 100\n'
STARTUP_TIMEOUT = 30.0
PAYLOAD = "128"
# Nodes of group c: one subscriber on each, vs all of them on one node.
SPREAD_NODES = 8
DRAIN = "2s"


# --- processes --------------------------------------------------------------


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c CPU` (taskset execs it: same pid)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/PID/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) in parentheses.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Redis:
    """One `redis-server` on 127.0.0.1, no persistence, and a tiny RESP
    client (inline commands) for INFO and CONFIG RESETSTAT."""

    def __init__(self, cpu: int | None):
        if shutil.which("redis-server") is None:
            sys.exit("cluster-bench: redis-server not found (Debian: apt-get install redis-server)")
        for _ in range(10):
            self.port = free_port()
            self.proc = subprocess.Popen(
                pinned(cpu, [
                    "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--loglevel", "warning", "--logfile", "",
                ]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.info("server").get("process_id") == str(self.proc.pid):
                        return
                    break  # another server answers on this port
                except OSError:
                    time.sleep(0.05)
            self.stop()
        sys.exit("cluster-bench: redis-server did not start on 10 free ports")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, line: str) -> bytes:
        """Sends one inline command; returns the reply's bytes (bulk or
        status), read within 5 s."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(line.encode() + b"\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("redis closed the connection")
                data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"-"):
                raise OSError(head.decode())
            if not head.startswith(b"$"):
                return head[1:]
            size = int(head[1:])
            while len(rest) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("redis closed the connection")
                rest += chunk
            return rest[:size]

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.command(f"INFO {section}").decode().splitlines():
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                out[key] = value
        return out

    def cpu_seconds(self) -> float:
        cpu = self.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def commandstats(self) -> dict[str, dict[str, float]]:
        """`cmdstat_NAME` → {calls, usec, usec_per_call, ...}."""
        stats = {}
        for key, value in self.info("commandstats").items():
            name = key.removeprefix("cmdstat_")
            fields = {}
            for item in value.split(","):
                k, _, v = item.partition("=")
                try:
                    fields[k] = float(v)
                except ValueError:
                    pass
            stats[name] = fields
        return stats

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Node:
    """One `tickwire serve` on 127.0.0.1:0; ready once /readyz says 200."""

    def __init__(self, binary: str, cpu: int | None, cluster: str | None, config: Path | None):
        argv = [binary, "serve", "--listen", "127.0.0.1:0", "--log-level", "error", *LIMITS]
        if cluster:
            argv += ["--cluster", cluster]
        if config:
            argv += ["--config", str(config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")}
        self.proc = subprocess.Popen(
            pinned(cpu, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.addr = self._banner()
        # Keep reading standard output so the node never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self._wait_ready()

    def _banner(self) -> str:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        line = found[0] if found else ""
        if not line.startswith("tickwire listening on "):
            self.stop()
            raise RuntimeError(f"no banner from tickwire serve within {STARTUP_TIMEOUT}s: {line!r}")
        return line.split()[3]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"node {self.addr} not ready within {STARTUP_TIMEOUT}s")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"ws://{self.addr}/ws"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- scenarios --------------------------------------------------------------


@dataclass
class Variant:
    """One row kind: where subscribers and the publisher go, and the load."""

    name: str
    nodes: list[str]  # node keys of the group; subscribers round-robin over them
    publisher: str  # node key
    topic: str
    subscribers: int
    rate: int | None  # msgs/s; None: max rate


@dataclass
class Group:
    """Nodes started together and the variants run on them, alternating."""

    name: str
    # key → (cluster?, history config?)
    nodes: dict[str, tuple[bool, bool]]
    variants: list[Variant] = field(default_factory=list)


def groups() -> list[Group]:
    publish = Group("publish", {"single": (False, False), "cluster": (True, False), "history": (True, True)})
    for rate in (5000, None):
        label = f"{rate} msg/s" if rate else "max rate"
        tag = "r" if rate else "m"
        publish.variants += [
            Variant(f"a 1 node, no --cluster, {label}", ["single"], "single", f"bench.a{tag}", 10, rate),
            Variant(f"a 1 node, --cluster, {label}", ["cluster"], "cluster", f"bench.a{tag}", 10, rate),
            Variant(f"a 1 node, --cluster + history 100, {label}", ["history"], "history", f"bench.h{tag}", 10, rate),
        ]
    fanout = Group(
        "fanout", {"single": (False, False), "n1": (True, False), "n2": (True, False), "n3": (True, False)},
    )
    fanout.variants += [
        Variant("b 300 subs on 1 node, no --cluster, 1000 msg/s", ["single"], "single", "bench.b0", 300, 1000),
        Variant("b 300 subs on 1 node, 1000 msg/s", ["n1"], "n1", "bench.b1", 300, 1000),
        Variant("b 300 subs over 3 nodes, 1000 msg/s", ["n1", "n2", "n3"], "n1", "bench.b3", 300, 1000),
    ]
    spread = [f"r{i}" for i in range(1, SPREAD_NODES + 1)]
    redis = Group("redis", {key: (True, False) for key in spread})
    redis.variants += [
        Variant(f"c {SPREAD_NODES} subs on 1 node, 10k msg/s", ["r1"], "r1", "bench.c1", SPREAD_NODES, 10000),
        Variant(
            f"c {SPREAD_NODES} subs over {SPREAD_NODES} nodes, 10k msg/s", spread, "r1", "bench.c8", SPREAD_NODES, 10000,
        ),
    ]
    return [publish, fanout, redis]


def run_bench(binary: str, cpu: int | None, duration: str, v: Variant, urls: dict[str, str]) -> dict:
    argv = [
        binary, "bench", "fanout", "--json", "--quiet", "--payload", PAYLOAD,
        "--duration", duration, "--drain", DRAIN, "--topic", v.topic,
        "--subscribers", str(v.subscribers), "--url", urls[v.publisher],
    ]
    for key in v.nodes:
        argv += ["--subscriber-url", urls[key]]
    if v.rate:
        argv += ["--rate", str(v.rate)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TICKWIRE_")}
    out = subprocess.run(pinned(cpu, argv), capture_output=True, text=True, timeout=120, env=env)
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"bench failed (exit {out.returncode}): {out.stderr.strip()}") from None
    report["exit_code"] = out.returncode
    return report


def measure(binary, cpus, duration, v, nodes: dict[str, Node], redis: Redis) -> dict:
    urls = {k: n.url for k, n in nodes.items()}
    redis.command("CONFIG RESETSTAT")
    load_before = load_average()
    node_before = {k: n.cpu_seconds() for k, n in nodes.items()}
    redis_before = redis.cpu_seconds()
    t0 = time.monotonic()
    report = run_bench(binary, cpus["load"], duration, v, urls)
    wall = time.monotonic() - t0
    redis_cpu = redis.cpu_seconds() - redis_before
    node_cpu = {k: n.cpu_seconds() - node_before[k] for k, n in nodes.items()}
    stats = redis.commandstats()
    return {
        "variant": v.name,
        "wall_s": wall,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "node_cpu_s": node_cpu,
        "redis_cpu_s": redis_cpu,
        "redis_commandstats": stats,
        "bench": report,
    }


# --- output -----------------------------------------------------------------


def row(m: dict) -> list[str]:
    b = m["bench"]
    lat = b["latency"]
    published, deliveries = b["published"], b["deliveries"]
    node_cpu = sum(m["node_cpu_s"].values())
    evalsha = m["redis_commandstats"].get("evalsha", {})

    def per_m(cpu: float, n: int) -> str:
        return f"{cpu / n * 1e6:.1f}" if n else "-"

    return [
        m["variant"],
        f"{b['publish_rate'] / 1000:.1f}k",
        f"{b['deliveries_per_sec'] / 1000:.0f}k",
        f"{lat['p50_us'] / 1000:.2f}",
        f"{lat['p99_us'] / 1000:.2f}",
        f"{lat['p999_us'] / 1000:.2f}",
        "ok" if b["ok"] else f"FAIL lost={b['lost']}",
        f"{node_cpu / m['wall_s'] * 100:.0f}%",
        per_m(node_cpu, deliveries),
        f"{m['redis_cpu_s'] / m['wall_s'] * 100:.0f}%",
        per_m(m["redis_cpu_s"], published),
        per_m(m["redis_cpu_s"], deliveries),
        f"{evalsha['usec_per_call']:.1f}" if evalsha else "-",
        m["load_average_before"].split()[0],
    ]


HEADER = [
    "scenario", "pub/s", "deliv/s", "p50 ms", "p99 ms", "p99.9 ms", "result",
    "nodes CPU", "nodes s/M deliv", "Redis CPU", "Redis s/M pub", "Redis s/M deliv",
    "EVALSHA µs", "load",
]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def derived(results: list[dict]) -> None:
    """Averages over runs of the per-publish and per-node Redis costs."""

    def avg(name: str, f) -> float | None:
        values = [f(m) for m in results if m["variant"] == name and m["bench"]["published"]]
        return sum(values) / len(values) if values else None

    per_pub = lambda m: m["redis_cpu_s"] / m["bench"]["published"] * 1e6  # noqa: E731
    print("\nRedis CPU per publish (µs = s per million publishes), mean over runs:")
    for m in dict.fromkeys(m["variant"] for m in results):
        if "no --cluster" not in m:
            print(f"  {m}: {avg(m, per_pub):.2f}")
    n = SPREAD_NODES
    one = f"c {n} subs on 1 node, 10k msg/s"
    spread = f"c {n} subs over {n} nodes, 10k msg/s"
    redis_one, redis_spread = avg(one, per_pub), avg(spread, per_pub)
    node_pub = lambda m: sum(m["node_cpu_s"].values()) / m["bench"]["published"] * 1e6  # noqa: E731
    node_one, node_spread = avg(one, node_pub), avg(spread, node_pub)
    if None not in (redis_one, redis_spread, node_one, node_spread):
        print(
            f"Per extra subscribed node and publish (c: {n} nodes − 1 node, / {n - 1}): "
            f"Redis {(redis_spread - redis_one) / (n - 1):.2f} µs, "
            f"nodes {(node_spread - node_one) / (n - 1):.2f} µs"
        )


# --- main -------------------------------------------------------------------


def build() -> str:
    print("cluster-bench: cargo build --release -p tickwire-cli --bins", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-p", "tickwire-cli", "--bins"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "release" / "tickwire")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", help="tickwire binary to use (default: build the release binary)")
    p.add_argument("--runs", type=int, default=2, help="runs of each scenario (default 2)")
    p.add_argument("--duration", default="4s", help="publishing time per run (default 4s)")
    p.add_argument("--only", help="comma-separated groups: publish, fanout, redis (default: all)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--json", help="write every run's raw figures to this file")
    args = p.parse_args()
    if not 1 <= args.runs <= 20:
        p.error("--runs must be between 1 and 20")

    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    cpus = {"nodes": 0, "redis": 1, "load": 1} if pin else {"nodes": None, "redis": None, "load": None}
    binary = args.bin or build()
    selected = [g for g in groups() if not args.only or g.name in args.only.split(",")]

    print(f"cluster-bench: {binary}; pinning {'nodes→CPU 0, Redis and load→CPU 1' if pin else 'off'}; "
          f"{args.runs} run(s) of {args.duration} each; load average at start {load_average()}")
    redis = Redis(cpus["redis"])
    results: list[dict] = []
    rows: list[list[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            history = Path(tmp) / "history.toml"
            history.write_text(HISTORY_TOML)
            for group in selected:
                nodes: dict[str, Node] = {}
                try:
                    for key, (cluster, hist) in group.nodes.items():
                        nodes[key] = Node(
                            binary, cpus["nodes"], redis.url if cluster else None, history if hist else None,
                        )
                    for run in range(args.runs):
                        for v in group.variants:
                            print(f"cluster-bench: run {run + 1}/{args.runs}: {v.name}", file=sys.stderr)
                            m = measure(binary, cpus, args.duration, v, nodes, redis)
                            results.append(m)
                            rows.append(row(m))
                finally:
                    for n in nodes.values():
                        n.stop()
                redis.command("FLUSHALL")
    finally:
        redis.stop()

    print()
    print_table(rows)
    derived(results)
    print(f"\nload average at end: {load_average()} (on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(m["bench"]["ok"] for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
