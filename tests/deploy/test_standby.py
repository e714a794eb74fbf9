"""Two cluster-scope instances, as the Nomad job runs them (count = 2).

Both run against the project's test Nomad API server on loopback, in enforce
mode, each with its own journal and listener, the way two allocations of
deploy/nomad/nomad-medic-cluster.nomad.hcl do. The job relies on three
things that this test checks:
  - exactly one instance holds the lock and acts: /readyz returns 200 on one
    of them only;
  - both return 200 on /healthz, the job's Nomad check, or the standby would
    fail its deployment and be restarted by check_restart in a loop;
  - nothing is done twice: each orphaned registration is deleted once.

Needs NOMAD_MEDIC_BIN.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import deploylib as d

sys.path.insert(0, os.path.join(d.REPO, "tests", "integration"))

from harness import FakeNomad, scenarios  # noqa: E402  (path set above)

SETTLE_TIMEOUT_S = 20.0


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port, path):
    """HTTP status of GET path on 127.0.0.1:port, or None when nothing listens there."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


class StandbyTest(unittest.TestCase):
    def setUp(self):
        try:
            self.binary = d.medic_binary()
        except d.SetupError as e:
            self.fail(str(e))
        self.tmp = tempfile.mkdtemp(prefix="nomad-medic-standby-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.nomad = FakeNomad()
        self.nomad.start()
        self.addCleanup(self.nomad.stop)
        self.scenario = scenarios.two_namespaces()
        self.nomad.load(self.scenario)
        self.processes = []

    def tearDown(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_instance(self, name):
        port = free_loopback_port()
        config = os.path.join(self.tmp, name + ".conf")
        with open(config, "w", encoding="utf-8") as f:
            f.write("\n".join([
                'nomad = { address = "%s"; };' % self.nomad.address,
                'journal = { path = "%s"; };' % os.path.join(self.tmp, name + ".db"),
                'controller = { mode = "enforce"; interval = "1s"; pause_file = "%s"; };'
                % os.path.join(self.tmp, "pause"),
                'rules = { orphan_services = { grace = "0s"; cooldown = "0s"; rate_limit = "0"; }; };',
                'coordination = { lock_ttl = "10s"; };',
                'listener = { enabled = true; address = "127.0.0.1:%d"; healthy_within = "30s"; };' % port,
                "",
            ]))
        log = open(os.path.join(self.tmp, name + ".log"), "w", encoding="utf-8")
        self.addCleanup(log.close)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        proc = subprocess.Popen([self.binary, "run", "--config", config], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
        self.processes.append(proc)
        return port

    def log_tail(self, name):
        with open(os.path.join(self.tmp, name + ".log"), encoding="utf-8") as f:
            return f.read()[-2000:]

    def test_one_acts_and_both_are_healthy(self):
        ports = {name: self.start_instance(name) for name in ("a", "b")}
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            healthz = {name: probe(port, "/healthz") for name, port in ports.items()}
            readyz = {name: probe(port, "/readyz") for name, port in ports.items()}
            settled = all(s == 200 for s in healthz.values()) and sorted(readyz.values()) == [200, 503]
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)

        logs = "\n".join("--- instance %s:\n%s" % (name, self.log_tail(name)) for name in ports)
        for name in ports:
            with self.subTest(instance=name):
                self.assertEqual(healthz[name], 200, "GET /healthz on instance %s returned %s after %.0fs, so "
                                 "the job's check fails there\n%s" % (name, healthz[name], SETTLE_TIMEOUT_S, logs))
        self.assertEqual(sorted(readyz.values()), [200, 503],
                         "GET /readyz returned %s; exactly one instance should hold the lock\n%s" % (readyz, logs))

        deletes = self.nomad.service_deletes()
        self.assertEqual(len(deletes), len(set(deletes)), "a registration was deleted twice: %s" % deletes)
        self.assertEqual(set(deletes), set(scenarios.orphan_ids(self.scenario)))


if __name__ == "__main__":
    unittest.main()
