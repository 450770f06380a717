"""Tests of everything under deploy/, run by deploy/check.sh.

* compose.yaml: the structure of the local three-node cluster.
* The Helm chart: the manifests `helm template` rendered into RENDER_DIR
  (one file per values file) are checked for what a platform team relies on
  (probes, drain timing, security context, selectors, the files the chart
  copies), the schema is checked to refuse bad values, and every rendered
  broker config file is checked to start the real broker.
* Monitoring: every metric name the dashboard's and the alerts' queries use
  is exported by a running broker's /metrics, and the scrape passes
  `promtool check metrics`.

Environment: HELM (the helm binary), TICKWIRE_BIN (the tickwire binary),
RENDER_DIR (the rendered manifests, NAME.yaml per values file), PROMTOOL.
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
import unittest
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
CHART = DEPLOY / "helm" / "tickwire"
HELM = os.environ.get("HELM", "helm")
PROMTOOL = os.environ.get("PROMTOOL", "promtool")
TICKWIRE = os.environ.get("TICKWIRE_BIN", str(DEPLOY.parent / "target" / "debug" / "tickwire"))
RENDER_DIR = Path(os.environ.get("RENDER_DIR", "/nonexistent"))

# How long a started broker may take to print its banner or to exit.
DEADLINE_SECONDS = 20

# Settings the chart writes itself (values.schema.json refuses them in config).
MANAGED_FILE_KEYS = {
    "tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_client_grants_file",
    "jwt_hmac_secret_file", "jwt_public_key_file", "jwks_file", "api_key_file",
    "cluster_ca_file", "cluster_cert_file", "cluster_key_file",
}


def parse_seconds(text):
    """Seconds of a duration the chart writes ("10s")."""
    match = re.fullmatch(r"(\d+)s", text)
    if not match:
        raise ValueError(f"not a whole-seconds duration: {text!r}")
    return int(match.group(1))


def rendered(name):
    """The objects of RENDER_DIR/name.yaml, by (kind, name)."""
    docs = [d for d in yaml.safe_load_all((RENDER_DIR / f"{name}.yaml").read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def of_kind(objects, kind):
    return [o for (k, _), o in objects.items() if k == kind]


def broker_deployment(objects):
    (deployment,) = [
        d for d in of_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "broker"
    ]
    return deployment


def broker_config(objects):
    (config,) = [
        c for c in of_kind(objects, "ConfigMap") if "tickwire.toml" in c.get("data", {})
    ]
    return config["data"]["tickwire.toml"]


class Broker:
    """The real tickwire binary on 127.0.0.1 port 0, stopped with SIGTERM."""

    def __init__(self, *args):
        self.process = subprocess.Popen(
            [TICKWIRE, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--shutdown-delay", "0s", "--shutdown-grace", "2s", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addresses = {}
        pending = b""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while "metrics" not in self.addresses:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.process.kill()
                self.process.wait(timeout=DEADLINE_SECONDS)
                raise AssertionError(
                    f"no banner from tickwire serve {' '.join(args)}: "
                    + self.process.stderr.read().decode(errors="replace")
                )
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                words = line.decode().split()
                if words[:2] == ["tickwire", "listening"]:
                    self.addresses["main"] = words[3]
                elif words[:2] == ["tickwire", "metrics"]:
                    self.addresses["metrics"] = words[3]

    def scrape(self):
        url = f"http://{self.addresses['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=DEADLINE_SECONDS) as response:
            return response.read().decode()

    def stop(self):
        """Stops the broker with SIGTERM (handled from the banner on: the
        broker drains and exits 0); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE_SECONDS)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


def text_frame_close(address):
    """Opens a WebSocket and sends a text frame, which the broker answers
    with close 1003, so tickwire_closes_total has a series to scrape."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE_SECONDS) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: " + address.encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError(f"handshake cut short: {head!r}")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        mask = b"\x01\x02\x03\x04"
        payload = b"hi"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        reply = head.split(b"\r\n\r\n", 1)[1]
        while len(reply) < 4:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        assert reply[:1] == b"\x88" and reply[2:4] == (1003).to_bytes(2, "big"), reply


class DockerfileTest(unittest.TestCase):
    """deploy/docker/Dockerfile agrees with the chart and the broker (hadolint
    checks the rest)."""

    def setUp(self):
        text = (DEPLOY / "docker" / "Dockerfile").read_text()
        joined = re.sub(r"\\\n\s*", " ", text)
        self.instructions = [l.strip() for l in joined.splitlines()
                             if l.strip() and not l.lstrip().startswith("#")]
        self.values = yaml.safe_load((CHART / "values.yaml").read_text())

    def final_stage(self):
        last = max(i for i, l in enumerate(self.instructions) if l.startswith("FROM "))
        return self.instructions[last:]

    def test_runs_unprivileged_with_the_chart_user(self):
        (user,) = [l for l in self.final_stage() if l.startswith("USER ")]
        uid, gid = user.split()[1].split(":")
        self.assertEqual(int(uid), self.values["podSecurityContext"]["runAsUser"])
        self.assertEqual(int(gid), self.values["podSecurityContext"]["runAsGroup"])
        self.assertNotEqual(int(uid), 0)

    def test_exec_form_entrypoint_healthcheck_and_labels(self):
        stage = self.final_stage()
        (entrypoint,) = [l for l in stage if l.startswith("ENTRYPOINT ")]
        self.assertEqual(json.loads(entrypoint.split(" ", 1)[1]), ["/usr/local/bin/tickwire"])
        (healthcheck,) = [l for l in stage if l.startswith("HEALTHCHECK ")]
        self.assertIn("/healthz", healthcheck)
        labels = " ".join(l for l in stage if l.startswith("LABEL "))
        for key in ["title", "version", "revision", "source", "licenses"]:
            self.assertIn(f"org.opencontainers.image.{key}=", labels)

    def test_ports_match_the_chart(self):
        stage = self.final_stage()
        (expose,) = [l for l in stage if l.startswith("EXPOSE ")]
        ports = self.values["ports"]
        self.assertEqual(sorted(int(p) for p in expose.split()[1:]), sorted([ports["ws"], ports["metrics"]]))
        env = " ".join(l for l in stage if l.startswith("ENV "))
        self.assertIn(f"TICKWIRE_LISTEN=0.0.0.0:{ports['ws']}", env)
        self.assertIn(f"TICKWIRE_METRICS_LISTEN=0.0.0.0:{ports['metrics']}", env)

    def test_the_toolchain_is_new_enough(self):
        (arg,) = [l for l in self.instructions if l.startswith("ARG RUST_VERSION=")]
        image = tuple(int(x) for x in arg.split("=")[1].split("."))
        manifest = tomllib.loads((DEPLOY.parent / "Cargo.toml").read_text())
        needed = tuple(int(x) for x in manifest["workspace"]["package"]["rust-version"].split("."))
        self.assertGreaterEqual(image, needed)


class ComposeTest(unittest.TestCase):
    """deploy/docker/compose.yaml: three nodes on one Redis, Prometheus
    scraping every node, Grafana provisioned with the dashboard."""

    def setUp(self):
        self.dir = DEPLOY / "docker"
        self.compose = yaml.safe_load((self.dir / "compose.yaml").read_text())
        self.services = self.compose["services"]

    def test_three_nodes_share_one_redis_and_run_locked_down(self):
        nodes = sorted(n for n in self.services if n.startswith("node"))
        self.assertEqual(nodes, ["node1", "node2", "node3"])
        for name in nodes:
            node = self.services[name]
            env = node["environment"]
            self.assertEqual(env["TICKWIRE_CLUSTER"], "redis://redis:6379/0")
            self.assertEqual(env["TICKWIRE_LISTEN"], "0.0.0.0:8080")
            self.assertEqual(env["TICKWIRE_METRICS_LISTEN"], "0.0.0.0:9090")
            self.assertIs(node["read_only"], True)
            self.assertEqual(node["cap_drop"], ["ALL"])
            self.assertEqual(node["depends_on"]["redis"]["condition"], "service_healthy")
            self.assertEqual(node["build"]["dockerfile"], "deploy/docker/Dockerfile")
            self.assertTrue((self.dir / node["build"]["context"] / node["build"]["dockerfile"]).is_file())
            grace = parse_seconds(env["TICKWIRE_SHUTDOWN_DELAY"]) + parse_seconds(env["TICKWIRE_SHUTDOWN_GRACE"])
            self.assertGreater(parse_seconds(node["stop_grace_period"]), grace)
        self.assertIn("healthcheck", self.services["redis"])
        published = [p for n in nodes for p in self.services[n]["ports"]]
        self.assertEqual(len(set(published)), 3, "each node on its own host port")

    def test_prometheus_scrapes_every_node_and_loads_the_alerts(self):
        prometheus = self.services["prometheus"]
        mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in prometheus["volumes"])
        for source in mounts:
            self.assertTrue((self.dir / source).is_file(), source)
        config = yaml.safe_load((self.dir / "prometheus.yml").read_text())
        (job,) = config["scrape_configs"]
        self.assertEqual(job["job_name"], "tickwire", "the alert rules select job=tickwire")
        targets = job["static_configs"][0]["targets"]
        self.assertEqual(sorted(targets), ["node1:9090", "node2:9090", "node3:9090"])
        self.assertIn(mounts["../prometheus/alerts.yaml"], config["rule_files"])
        # promtool checks the configuration with the rules at their real path.
        with tempfile.TemporaryDirectory() as tmp:
            config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yaml")]
            checked = Path(tmp) / "prometheus.yml"
            checked.write_text(yaml.safe_dump(config))
            result = subprocess.run([PROMTOOL, "check", "config", str(checked)],
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_grafana_is_provisioned_with_the_dashboard(self):
        grafana = self.services["grafana"]
        mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
        for source in mounts:
            self.assertTrue((self.dir / source).is_file(), source)
        providers = yaml.safe_load((self.dir / "grafana" / "dashboards.yaml").read_text())
        path = providers["providers"][0]["options"]["path"]
        self.assertEqual(str(Path(mounts["../grafana/tickwire.json"]).parent), path)
        sources = yaml.safe_load((self.dir / "grafana" / "datasources.yaml").read_text())
        self.assertEqual(sources["datasources"][0]["url"], "http://prometheus:9090")


class ChartTest(unittest.TestCase):
    """The manifests rendered from each values file of deploy/check.sh."""

    names = sorted(p.stem for p in RENDER_DIR.glob("*.yaml"))

    def test_every_values_file_was_rendered(self):
        self.assertEqual(
            self.names,
            sorted(["default"] + [p.name.removesuffix("-values.yaml")
                                  for p in (CHART / "ci").glob("*-values.yaml")]),
        )

    def test_probes_drain_and_security_context(self):
        for name in self.names:
            with self.subTest(values=name):
                objects = rendered(name)
                pod = broker_deployment(objects)["spec"]["template"]["spec"]
                (container,) = pod["containers"]
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                self.assertEqual(set(ports), {"ws", "metrics"})
                for probe, path in [("livenessProbe", "/healthz"), ("startupProbe", "/healthz"),
                                    ("readinessProbe", "/readyz")]:
                    self.assertEqual(container[probe]["httpGet"], {"path": path, "port": "metrics"})
                config = tomllib.loads(broker_config(objects))
                self.assertEqual(config["listen"], f"0.0.0.0:{ports['ws']}")
                self.assertEqual(config["metrics_listen"], f"0.0.0.0:{ports['metrics']}")
                drain = parse_seconds(config["shutdown_delay"]) + parse_seconds(config["shutdown_grace"])
                self.assertGreater(pod["terminationGracePeriodSeconds"], drain,
                                   "SIGKILL must not cut the drain short")
                self.assertEqual(container["lifecycle"]["preStop"]["exec"]["command"],
                                 ["/bin/sh", "-c", "kill -TERM 1"])
                self.assertIs(pod["shareProcessNamespace"], False, "the broker must be PID 1")
                security = container["securityContext"]
                self.assertIs(security["allowPrivilegeEscalation"], False)
                self.assertIs(security["readOnlyRootFilesystem"], True)
                self.assertEqual(security["capabilities"]["drop"], ["ALL"])
                self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
                self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
                self.assertIs(pod["automountServiceAccountToken"], False)
                self.assertIn("--config", container["args"])
                mounts = {m["name"] for m in container["volumeMounts"]}
                self.assertEqual(mounts, {v["name"] for v in pod["volumes"]})

    def test_selectors_match_the_broker_pods(self):
        for name in self.names:
            with self.subTest(values=name):
                objects = rendered(name)
                deployment = broker_deployment(objects)
                labels = deployment["spec"]["template"]["metadata"]["labels"]
                selects = lambda selector: all(labels.get(k) == v for k, v in selector.items())
                services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
                broker_services = [s for s in services.values() if selects(s["spec"]["selector"])]
                self.assertEqual(sorted(s["spec"]["ports"][0]["targetPort"] for s in broker_services),
                                 ["metrics", "ws"])
                for service in broker_services:
                    self.assertEqual(service["spec"].get("sessionAffinity", "None"), "None",
                                     "no stickiness: any node serves any client")
                for kind in ["PodDisruptionBudget"]:
                    for o in of_kind(objects, kind):
                        self.assertTrue(selects(o["spec"]["selector"]["matchLabels"]))
                for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
                    self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
                    self.assertNotIn("replicas", deployment["spec"], "the HPA owns the replica count")
                for monitor in of_kind(objects, "ServiceMonitor"):
                    wanted = monitor["spec"]["selector"]["matchLabels"]
                    matched = [s for s in services.values()
                               if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
                    self.assertEqual([s["spec"]["ports"][0]["name"] for s in matched], ["metrics"])
                    self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "metrics")
                    self.assertEqual(matched[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]],
                                     "tickwire", "the alerts expect job=tickwire")
                for policy in of_kind(objects, "NetworkPolicy"):
                    self.assertTrue(selects(policy["spec"]["podSelector"]["matchLabels"]))
                    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
                    self.assertEqual(ports, {"ws", "metrics"})
                for route in of_kind(objects, "HTTPRoute"):
                    (rule,) = route["spec"]["rules"]
                    self.assertEqual(rule["timeouts"], {"request": "0s", "backendRequest": "0s"},
                                     "WebSockets outlive any request timeout")
                    self.assertIn(rule["backendRefs"][0]["name"], services)
                for ingress in of_kind(objects, "Ingress"):
                    annotations = ingress["metadata"]["annotations"]
                    self.assertGreaterEqual(int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]), 3600)

    def test_secrets_and_cluster_url(self):
        everything = rendered("everything")
        (secret,) = of_kind(everything, "Secret")
        self.assertEqual(set(secret["data"]), {"jwt-hmac-secret", "api-keys", "cluster-url"})
        env = broker_deployment(everything)["spec"]["template"]["spec"]["containers"][0]["env"]
        cluster = next(e for e in env if e["name"] == "TICKWIRE_CLUSTER")
        self.assertEqual(cluster["valueFrom"]["secretKeyRef"],
                         {"name": secret["metadata"]["name"], "key": "cluster-url"})
        self.assertNotIn("secret@", broker_config(everything), "the Redis password stays in the Secret")
        autoscaling = rendered("autoscaling")
        env = broker_deployment(autoscaling)["spec"]["template"]["spec"]["containers"][0]["env"]
        redis_services = [s["metadata"]["name"] for s in of_kind(autoscaling, "Service")
                          if s["metadata"]["name"].endswith("-redis")]
        self.assertEqual(env[0]["value"], f"redis://{redis_services[0]}:6379/0")
        default = rendered("default")
        self.assertEqual(of_kind(default, "Secret"), [])
        self.assertNotIn("env", broker_deployment(default)["spec"]["template"]["spec"]["containers"][0])

    def test_copied_rules_and_dashboard_are_the_originals(self):
        everything = rendered("everything")
        (rule,) = of_kind(everything, "PrometheusRule")
        self.assertEqual(rule["spec"], yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text()))
        (dashboard,) = [c for c in of_kind(everything, "ConfigMap") if "tickwire.json" in c["data"]]
        self.assertEqual(json.loads(dashboard["data"]["tickwire.json"]),
                         json.loads((DEPLOY / "grafana" / "tickwire.json").read_text()))

    def test_schema_refuses_bad_values(self):
        bad = {
            "replica count 0": ["--set", "replicaCount=0"],
            "a setting the chart owns": ["--set", "config.listen=0.0.0.0:1"],
            "an unknown setting": ["--set", "config.max_conections=5"],
            "an unknown value": ["--set", "replicas=3"],
            "a log format": ["--set", "config.log_format=xml"],
            "a count that is not one": ["--set-string", "config.max_connections=lots"],
            "a duration without unit": ["--set-string", "config.keepalive_interval=15"],
            "a writable root file system": ["--set", "securityContext.readOnlyRootFilesystem=false"],
            "privilege escalation": ["--set", "securityContext.allowPrivilegeEscalation=true"],
            "running as root": ["--set", "podSecurityContext.runAsNonRoot=false"],
            "a short HMAC secret": ["--set", "auth.jwt.hmacSecret=short"],
            "a slow-consumer policy": ["--set", "topics[0].pattern=a,topics[0].slow_consumer=wait"],
            "a Redis URL": ["--set", "cluster.enabled=true,cluster.url=http://redis:6379"],
            "an HTTPRoute without a parent": ["--set", "httpRoute.enabled=true"],
            "TLS without a certificate": ["--set", "tls.enabled=true"],
        }
        for what, args in bad.items():
            with self.subTest(what):
                result = subprocess.run([HELM, "template", "t", str(CHART), *args],
                                        capture_output=True, text=True)
                self.assertNotEqual(result.returncode, 0, f"{what} was accepted")
                self.assertIn("schema", result.stderr, result.stderr)
        refused = {
            "cluster.enabled needs": ["--set", "cluster.enabled=true"],
            "more than one pod": ["--set", "replicaCount=2"],
        }
        for message, args in refused.items():
            with self.subTest(message):
                result = subprocess.run([HELM, "template", "t", str(CHART), *args],
                                        capture_output=True, text=True)
                self.assertNotEqual(result.returncode, 0)
                self.assertIn(message, result.stderr)

    def test_readme_describes_every_value(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        readme = (CHART / "README.md").read_text()
        # Maps whose keys are the user's own or Kubernetes' own.
        free_form = {"podSecurityContext", "securityContext", "config", "resources",
                     "podAnnotations", "podLabels", "nodeSelector", "affinity"}
        for key, value in values.items():
            paths = [key]
            if isinstance(value, dict) and key not in free_form:
                paths = [f"{key}.{sub}" for sub in value]
            for path in paths:
                with self.subTest(path):
                    self.assertTrue(f"`{path}" in readme, f"{path} is not in README.md")

    def test_schema_knows_every_broker_setting(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        config = schema["properties"]["config"]
        known = set(config["properties"]) | set(config["propertyNames"]["not"]["enum"])
        help_text = subprocess.run([TICKWIRE, "serve", "--help"], capture_output=True,
                                   text=True, check=True).stdout
        flags = set(re.findall(r"^ {2,6}(?:-[a-zA-Z], )?--([a-z][a-z-]+)", help_text, re.M)) - {"config", "help"}
        self.assertEqual(known, {f.replace("-", "_") for f in flags})

    def test_the_broker_accepts_every_rendered_config(self):
        for name in self.names:
            with self.subTest(values=name), tempfile.TemporaryDirectory() as tmp:
                # Without the key and certificate files the chart mounts from Secrets.
                lines = [l for l in broker_config(rendered(name)).splitlines()
                         if l.split(" = ")[0] not in MANAGED_FILE_KEYS]
                path = Path(tmp) / "tickwire.toml"
                path.write_text("\n".join(lines) + "\n")
                broker = Broker("--config", str(path))
                self.assertEqual(broker.stop(), 0)


class MetricsTest(unittest.TestCase):
    """The dashboard and the alerts query only what the broker exports."""

    @classmethod
    def setUpClass(cls):
        broker = Broker()
        try:
            text_frame_close(broker.addresses["main"])
            cls.scrape = broker.scrape()
        finally:
            broker.stop()
        cls.exported = {line.split("{")[0].split(" ")[0]
                        for line in cls.scrape.splitlines() if line and not line.startswith("#")}

    def test_the_scrape_passes_promtool(self):
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=self.scrape,
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout + result.stderr, "", "promtool lint findings")

    def test_process_metrics_and_build_info(self):
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_open_fds", "process_max_fds", "tickwire_build_info"]:
            self.assertIn(name, self.exported)
        self.assertRegex(self.scrape, r'tickwire_build_info\{version="[^"]+"\} 1')

    def test_operations_guide_describes_every_family(self):
        guide = (DEPLOY.parent / "docs" / "operations.md").read_text()
        families = re.findall(r"^# TYPE (\S+) ", self.scrape, re.M)
        self.assertIn("tickwire_closes_total", families)
        for family in families:
            with self.subTest(family):
                self.assertTrue(f"`{family}`" in guide, f"{family} is not in docs/operations.md")

    def metric_names(self, expr):
        """Names a PromQL expression selects: every identifier before a
        selector or range, and every tickwire_/process_ identifier."""
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        expr = re.sub(r"\{[^}]*\}", "{}", expr)
        names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr))
        names |= set(re.findall(r"\b((?:tickwire|process)_[a-zA-Z0-9_:]+)", expr))
        return names - {"offset", "by", "without", "on", "ignoring", "group_left", "group_right"}

    def check(self, exprs):
        self.assertTrue(exprs)
        for where, expr in exprs:
            for name in self.metric_names(expr):
                with self.subTest(where=where, metric=name):
                    # `up` is Prometheus' own series for every scrape target.
                    self.assertTrue(name == "up" or name in self.exported,
                                    f"{name} (in {where}) is not in a live /metrics")

    def test_dashboard_queries(self):
        dashboard = json.loads((DEPLOY / "grafana" / "tickwire.json").read_text())
        exprs = [(f"panel {p['title']!r}", t["expr"])
                 for p in dashboard["panels"] for t in p.get("targets", [])]
        exprs += [(f"variable {v['name']}", v["query"]["query"])
                  for v in dashboard["templating"]["list"] if v["type"] == "query"]
        self.check(exprs)

    def test_alert_queries(self):
        rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
        self.check([(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]])

    def test_the_check_catches_an_unknown_name(self):
        self.assertIn("tickwire_no_such_total",
                      self.metric_names('sum(rate(tickwire_no_such_total{code="x"}[5m]))'))
        self.assertNotIn("tickwire_no_such_total", self.exported)


if __name__ == "__main__":
    unittest.main()
