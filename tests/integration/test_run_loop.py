"""run: the loop, SIGHUP reload, SIGTERM and SIGINT stopping after the current step."""

import json
import os
import signal
import sqlite3
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



class LoopHelpers:
    """Start and stop `run` on the two-namespace cluster, and count what it read and journaled."""

    scenario = staticmethod(scenarios.two_namespaces)

    def start(self, config):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        self.log = open(os.path.join(self.tmp, "run.log"), "w+")
        self.child = subprocess.Popen([os.environ["NOMAD_MEDIC_BIN"], "run", "--config", config],
                                      env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        self.child.send_signal(signal.SIGTERM)
        self.assertEqual(self.child.wait(timeout=20), 0)
        self.log.close()

    def listings(self):
        return [r for r in self.nomad.requests() if r["path"] == "/v1/nodes" and "index" not in r["params"]]

    def watches(self):
        return [r for r in self.nomad.requests() if r["path"] == "/v1/nodes" and "index" in r["params"]]

    def count(self, state):
        """Rows in state, 0 before the controller has created its journal (never create it here)."""
        if not os.path.exists(self.db):
            return 0
        try:
            return len(self.journal_rows("state = '%s'" % state))
        except sqlite3.OperationalError:
            return 0

    def wait_for(self, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def passes(self):
        """Summaries of the finished passes, oldest first."""
        if not os.path.exists(self.db):
            return []
        con = sqlite3.connect(self.db)
        try:
            rows = con.execute("SELECT summary_json FROM passes WHERE finished_at IS NOT NULL ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            rows = []
        finally:
            con.close()
        return [json.loads(row[0]) for row in rows]


class PendingWatch(LoopHelpers, MedicTestCase):
    """Findings blocked by time or waiting for an operator are watched, not re-read every interval."""

    def test_grace_waits_on_watch(self):
        self.start(self.policy(mode="dry-run", interval="1s", grace="6s"))
        try:
            self.assertTrue(self.wait_for(lambda: self.count("blocked") >= 8, 10),
                            "the first pass did not journal the orphans as blocked")
            first = time.time()
            time.sleep(3)
            # Interval 1s: a timer would have listed the cluster three more times by now.
            self.assertEqual(len(self.listings()), 1)
            self.assertEqual(len(self.passes()), 1)
            self.assertGreaterEqual(len(self.watches()), 1)
            # The grace period ends about 6 s after the first pass: one pass then, and dry-run rows.
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 2, 10),
                            "no pass after the grace period ended")
            self.assertGreaterEqual(time.time() - first, 4.0)
            self.assertTrue(self.wait_for(lambda: self.count("dry_run") >= 8, 5))
            # Nothing changed in the cluster, so that pass took every list over from the first.
            self.assertEqual(len(self.listings()), 1)
            # Dry-run decisions change only with the cluster: back to watching.
            time.sleep(3)
            self.assertEqual(len(self.passes()), 2)
        finally:
            self.stop()

    def test_approval_wakes_the_loop(self):
        self.start(self.policy(mode="approve", interval="30s"))
        try:
            self.assertTrue(self.wait_for(lambda: self.count("pending_approval") >= 8, 10),
                "the first pass did not queue the orphans")
            chosen = self.journal_rows("state = 'pending_approval'")[0]
            self.medic("actions", "approve", str(chosen["id"]), "--db", self.db, "--by", "alice")
            approved_at = time.time()
            # The loop checks for approvals between blocking queries of at most 10 s.
            self.assertTrue(self.wait_for(lambda: len(self.deletes()) == 1, 15),
                            "the approved action did not run before the 30 s interval")
            self.assertLess(time.time() - approved_at, 14)
            self.assertEqual(self.journal_rows("id = %d" % chosen["id"])[0]["state"], "succeeded")
            self.assertEqual(len(self.deletes()), 1)

            # After a pass that ran an action, passes repeat every interval; an approval still wakes it.
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 2, 10))
            second = self.journal_rows("state = 'pending_approval'")[0]
            self.medic("actions", "approve", str(second["id"]), "--db", self.db, "--by", "alice")
            approved_at = time.time()
            self.assertTrue(self.wait_for(lambda: len(self.deletes()) == 2, 15),
                            "the second approval waited for the 30 s interval")
            self.assertLess(time.time() - approved_at, 14)
        finally:
            self.stop()


class ReuseUnchanged(LoopHelpers, MedicTestCase):
    """After a change, the next pass reads again only the lists that changed."""

    def requests_to(self, prefix):
        return [r for r in self.nomad.requests() if r["path"].startswith(prefix) and "index" not in r["params"]]

    def test_reads_only_changed_lists(self):
        self.start(self.policy(mode="dry-run", interval="1s"))
        try:
            self.assertTrue(self.wait_for(lambda: self.count("dry_run") >= 8, 10),
                            "the first pass did not journal the orphans")
            self.assertTrue(self.wait_for(lambda: len(self.watches()) >= 1, 10), "no watch after the first pass")
            allocation_pages = len(self.requests_to("/v1/allocations"))
            service_reads = len(self.requests_to("/v1/service/"))
            self.assertGreater(service_reads, 0)

            # Only the node list changes: nodes are read again, allocations and registrations are not.
            node = self.data["nodes"][0]
            self.nomad.mutate([{"op": "set_node_status", "id": node["ID"], "status": node["Status"]}])
            self.assertTrue(self.wait_for(lambda: len(self.listings()) >= 2, 15), "no pass after the node change")
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 2, 10))
            self.assertEqual(len(self.requests_to("/v1/allocations")), allocation_pages)
            self.assertEqual(len(self.requests_to("/v1/service/")), service_reads)
            with open(self.log.name) as handle:
                self.assertIn("not read again: allocations, services", handle.read())
            first, second = self.passes()[:2]
            self.assertEqual(second["findings"], first["findings"])
            self.assertEqual(second["proposed"], first["proposed"])
            self.assertEqual(second["failed_reads"], 0)

            # A registration goes away: registrations are read again, and its finding is gone.
            orphan = self.journal_rows("state = 'dry_run'")[0]
            self.nomad.mutate([{"op": "remove_service", "namespace": orphan["namespace_name"], "id": orphan["target"]}])
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 3, 15), "no pass after the service change")
            self.assertGreater(len(self.requests_to("/v1/service/")), service_reads)
            self.assertEqual(len(self.requests_to("/v1/allocations")), allocation_pages)
            self.assertEqual(self.passes()[2]["proposed"], first["proposed"] - 1)
        finally:
            self.stop()

    def test_busy_cluster_still_resyncs(self):
        self.start(self.policy(mode="dry-run", interval="1s"))
        try:
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 1, 10))
            live = next(a for a in self.data["allocations"] if a["ClientStatus"] == "running")
            # Only the allocations change, every 0.8 s, for 25 intervals.
            end = time.time() + 25
            while time.time() < end:
                self.nomad.mutate([{"op": "set_alloc_status", "id": live["ID"], "client_status": "running"}])
                time.sleep(0.8)
            # Nodes are taken over between changes, but read in full at least every ten intervals.
            self.assertGreaterEqual(len(self.listings()), 3)
            self.assertGreaterEqual(len(self.passes()), 10)
        finally:
            self.stop()

    def test_index_going_back_reads_all(self):
        self.start(self.policy(mode="dry-run", interval="1s", grace="8s"))
        try:
            self.assertTrue(self.wait_for(lambda: self.count("blocked") >= 8, 10))
            # Another cluster with lower indexes now serves the same address, as after a snapshot restore.
            self.nomad.load(scenarios.healthy())
            self.assertTrue(self.wait_for(lambda: len(self.passes()) >= 2, 20), "no pass after the change")
            self.assertGreaterEqual(len(self.listings()), 2)
            # The healthy cluster has no orphans, so nothing of the old one may be journaled as would-run.
            time.sleep(1)
            self.assertEqual(self.count("dry_run"), 0)
        finally:
            self.stop()


class GcWaitsForNodes(LoopHelpers, MedicTestCase):
    """A forced GC blocked while a node is down waits for the node list to change."""

    scenario = staticmethod(lambda: scenarios.gc_pileup(down_node=True))

    def test_gc_precheck_waits_on_watch(self):
        config = self.policy(mode="dry-run", interval="1s",
                             system_gc='enabled = true; min_terminal_allocs = 10; min_terminal_evals = 10;')
        # The restart rules would propose restarting the down node; this test is about the GC alone.
        with open(config) as handle:
            text = handle.read()
        text = text.replace("rules = {", "rules = {\n  client_restart = { enabled = false; };\n"
                            "  server_restart = { enabled = false; };\n  node_ineligible = { enabled = false; };", 1)
        with open(config, "w") as handle:
            handle.write(text)
        self.start(config)
        try:
            self.assertTrue(self.wait_for(lambda: self.count("blocked") >= 1, 10), "the GC was not blocked")
            self.assertEqual(self.journal_rows("state = 'blocked'")[0]["blocked_by"], "precheck")
            time.sleep(4)
            self.assertEqual(len(self.passes()), 1, "the loop passed every interval instead of watching")
            self.assertGreaterEqual(len(self.watches()), 1)
            down = next(n for n in self.data["nodes"] if n["Status"] == "down")
            self.nomad.mutate([{"op": "set_node_status", "id": down["ID"], "status": "ready"}])
            self.assertTrue(self.wait_for(lambda: self.count("dry_run") >= 1, 15),
                            "no GC decision after the node came back")
        finally:
            self.stop()


if __name__ == "__main__":
    unittest.main()
