"""run with the HTTP listener: health, readiness, Prometheus metrics and the approval API."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from medic import MedicTestCase, scenarios

TOKEN = "alice-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def start(self, mode="approve", interval="1s", healthy_within="1m"):
        self.port = free_port()
        config = self.policy(mode=mode, interval=interval,
                             extra="listener = { enabled = true; address = \"127.0.0.1:%d\"; "
                             "tokens = ( { name = \"alice\"; token = \"%s\"; } ); healthy_within = \"%s\"; };"
                             % (self.port, TOKEN, healthy_within))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        self.log = open(os.path.join(self.tmp, "run.log"), "w+")
        self.child = subprocess.Popen([os.environ["NOMAD_MEDIC_BIN"], "run", "--config", config], env=env,
                                      stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop)

    def stop(self):
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            self.child.wait(timeout=15)
        self.log.close()

    def get(self, path, token=None, method="GET"):
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method)
        if token is not None:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return None, ""

    def wait_for(self, path, status, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got, body = self.get(path)
            if got == status:
                return body
            time.sleep(0.2)
        self.fail("%s never answered %d; log:\n%s" % (path, status, open(self.log.name).read()))

    def test_watching_counts_as_healthy(self):
        # Dry-run findings wait on blocking queries, with passes ten intervals apart.
        self.start(mode="dry-run", interval="1s", healthy_within="3s")
        self.assertEqual(self.wait_for("/healthz", 200), "ok")
        for _ in range(8):
            time.sleep(1)
            status, body = self.get("/healthz")
            self.assertEqual(status, 200, body)
        log = open(self.log.name).read()
        self.assertLess(log.count("finished complete="), 8, "the loop passed every interval instead of watching")

    def test_health_ready_and_metrics(self):
        self.start()
        self.assertEqual(self.wait_for("/healthz", 200), "ok")
        self.wait_for("/readyz", 200)
        status, text = self.get("/metrics")
        self.assertEqual(status, 200)
        for name in ("nomad_medic_passes_total", "nomad_medic_pass_duration_seconds",
                     "nomad_medic_findings", "nomad_medic_actions_total", "nomad_medic_guard_blocks_total",
                     "nomad_medic_rate_limit_tokens", "nomad_medic_breaker_open",
                     "nomad_medic_last_complete_observation_timestamp_seconds", "nomad_medic_leader",
                     "nomad_medic_nomad_requests_total", "nomad_medic_nomad_request_duration_seconds"):
            self.assertIn(name, text)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool (Debian package prometheus) is needed: scripts/install-deps.sh")
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertNotIn(TOKEN, text)

    def test_approve_through_api_then_runs(self):
        self.start(mode="approve")
        self.wait_for("/healthz", 200)
        status, body = self.get("/v1/actions")
        self.assertEqual(status, 401)
        status, body = self.get("/v1/actions", token="wrong-token-0000000000")
        self.assertEqual(status, 403)
        deadline = time.time() + 20
        pending = []
        while time.time() < deadline and not pending:
            status, body = self.get("/v1/actions", token=TOKEN)
            self.assertEqual(status, 200)
            pending = [r for r in json.loads(body) if r["state"] == "pending_approval"]
            time.sleep(0.2)
        self.assertTrue(pending)
        chosen = pending[0]
        status, body = self.get("/v1/actions/%d/approve" % chosen["id"], token=TOKEN, method="POST")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["decided_by"], "api:alice")
        deadline = time.time() + 20
        while time.time() < deadline and (chosen["namespace"], chosen["target"]) not in self.deletes():
            time.sleep(0.2)
        self.assertEqual(self.deletes(), {(chosen["namespace"], chosen["target"])})
        audit = self.sqlite("SELECT outcome, token_name FROM api_audit ORDER BY id")
        self.assertIn(("unauthorized", None), audit)
        self.assertIn(("forbidden", None), audit)
        self.assertIn(("approved", "alice"), audit)

    def sqlite(self, sql):
        import sqlite3
        con = sqlite3.connect(self.db)
        try:
            return [tuple(row) for row in con.execute(sql)]
        finally:
            con.close()


if __name__ == "__main__":
    unittest.main()
