"""run: the loop, SIGHUP reload, SIGTERM and SIGINT stopping after the current step."""

import os
import signal
import subprocess
import time
import unittest

from medic import MedicTestCase, scenarios


class RunLoop(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def start(self, config):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        self.log = open(os.path.join(self.tmp, "run.log"), "w+")
        return subprocess.Popen([os.environ["NOMAD_MEDIC_BIN"], "run", "--config", config],
                                env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_for(self, predicate, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name) as handle:
            return handle.read()

    def passes(self):
        return self.log_text().count("finished complete=")

    def test_sighup_reloads_policy(self):
        config = self.policy(mode="dry-run")
        child = self.start(config)
        try:
            self.assertTrue(self.wait_for(lambda: self.passes() >= 2), self.log_text())
            self.assertEqual(self.mutating(), [])
            with open(config, "w") as handle:
                handle.write(open(self.policy(name="enforce.conf", mode="enforce")).read())
            child.send_signal(signal.SIGHUP)
            self.assertTrue(self.wait_for(lambda: set(self.deletes()) == scenarios.orphan_ids(self.data)),
                            self.log_text())
            self.assertIn("SIGHUP: reloaded", self.log_text())
        finally:
            child.send_signal(signal.SIGTERM)
            self.assertEqual(child.wait(timeout=15), 0)
            self.log.close()

    def test_invalid_reload_keeps_policy(self):
        config = self.policy(mode="dry-run")
        child = self.start(config)
        try:
            self.assertTrue(self.wait_for(lambda: self.passes() >= 1), self.log_text())
            with open(config, "w") as handle:
                handle.write("controller = { mode = \"sometimes\"; };\n")
            child.send_signal(signal.SIGHUP)
            self.assertTrue(self.wait_for(lambda: "previous policy stays" in self.log_text()), self.log_text())
            before = self.passes()
            self.assertTrue(self.wait_for(lambda: self.passes() > before), self.log_text())
            self.assertEqual(child.poll(), None)
            self.assertEqual(self.mutating(), [])
        finally:
            child.send_signal(signal.SIGINT)
            self.assertEqual(child.wait(timeout=15), 0)
            self.log.close()

    def test_sigterm_finishes_current_step(self):
        config = self.policy(mode="dry-run")
        self.nomad.faults([{"path": "/v1/allocations", "delay_ms": 1500}])
        child = self.start(config)
        try:
            self.assertTrue(self.wait_for(lambda: "pass 1 started" in self.log_text()), self.log_text())
            time.sleep(0.3)
            child.send_signal(signal.SIGTERM)
            self.assertEqual(child.wait(timeout=15), 0)
        finally:
            self.log.close()
        text = self.log_text()
        self.assertIn("pass 1 finished", text)
        self.assertIn("stop requested", text)


class IdleWatch(MedicTestCase):
    scenario = staticmethod(scenarios.healthy)

    def test_idle_cluster_is_watched_not_relisted(self):
        config = self.policy(mode="dry-run", interval="2s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        log = open(os.path.join(self.tmp, "run.log"), "w+")
        child = subprocess.Popen([os.environ["NOMAD_MEDIC_BIN"], "run", "--config", config],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(7)
            listings = [r for r in self.nomad.requests()
                        if r["path"] == "/v1/nodes" and "index" not in r["params"]]
            watches = [r for r in self.nomad.requests()
                       if r["path"] == "/v1/nodes" and "index" in r["params"]]
            self.assertEqual(len(listings), 1, "the idle cluster was listed again")
            self.assertGreaterEqual(len(watches), 1)
            # At most one watch request per wait period (2 s) over the 7 s.
            self.assertLessEqual(len(watches), 4)
            for request in watches:
                self.assertEqual(request["params"]["wait"], "2s")

            # A change wakes the watch and a pass lists the nodes again.
            node = self.data["nodes"][0]["ID"]
            self.nomad.mutate([{"op": "set_node_status", "id": node, "status": "down"}])
            deadline = time.time() + 10
            while time.time() < deadline:
                listings = [r for r in self.nomad.requests()
                            if r["path"] == "/v1/nodes" and "index" not in r["params"]]
                if len(listings) >= 2:
                    break
                time.sleep(0.2)
            self.assertGreaterEqual(len(listings), 2)
        finally:
            child.send_signal(signal.SIGTERM)
            self.assertEqual(child.wait(timeout=20), 0)
            log.close()


if __name__ == "__main__":
    unittest.main()
