"""Node scope against real namespaces, CNI plugins and iptables rules (needs root).

Each test builds live and leaked bridge-mode allocations with tests/node/cnilab.py on a
network of its own ("nmit", bridge "nmit0", 172.26.90.0/24), serves their status from the
test Nomad API server, runs nomad-medic --scope node, and checks what is left on the host.
"""

import json
import os
import subprocess
import sys
import unittest
import uuid

from medic import MedicTestCase, write_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node"))

import cnilab  # noqa: E402  (path set above)

NODE_ID = "5b1c7e52-3f0a-4d8e-9c21-7a6f0e4b9d13"
PORT = 28901            # host port mapped by a leaked and a live allocation
OTHER_PORTS = (28902, 28903)


def alloc_record(alloc_id, status, desired="run"):
    return {"ID": alloc_id, "Namespace": "default", "NodeID": NODE_ID, "JobID": "web",
            "TaskGroup": "web", "ClientStatus": status, "DesiredStatus": desired}


class NodeScope(MedicTestCase):
    legacy_ipam = False

    def setUp(self):
        if os.geteuid() != 0:
            self.fail("the node-scope tests need root: they create network namespaces, a bridge "
                      "and iptables rules; run them as root (CI does)")
        super().setUp()
        self.lab = cnilab.Lab(network="nmit", bridge="nmit0", subnet="172.26.90.0/24",
                              legacy_ipam=self.legacy_ipam, register_atexit=True)
        self.allocs = []        # alloc records served by the test Nomad API
        self.foreign = []       # namespaces with non-allocation names made by a test

    def tearDown(self):
        try:
            self.lab.teardown()
        finally:
            for name in self.foreign:
                subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
            super().tearDown()

    def serve(self):
        self.nomad.load({"nodes": [{"ID": NODE_ID, "Name": "client-1", "Status": "ready"}],
                         "allocations": self.allocs,
                         "agent_self": {"stats": {"client": {"node_id": NODE_ID}}}})

    def node_policy(self, mode="enforce", grace="0s", name="node.conf", node_id=NODE_ID):
        paths = self.lab.product_paths()
        text = "\n".join([
            "nomad = { address = \"%s\"; };" % self.nomad.address,
            "journal = { path = \"%s\"; };" % self.db,
            "controller = { mode = \"%s\"; pause_file = \"%s\"; };" % (mode, os.path.join(self.tmp, "pause")),
            "rules = { netns_leaks = { grace = \"%s\"; cooldown = \"0s\"; rate_limit = \"100/h\"; }; };" % grace,
            "node = {",
            "  node_id = \"%s\";" % node_id,
            "  cni_cache_dir = \"%s\";" % paths["cni_cache_dir"],
            "  ipam_dir = \"%s\";" % paths["ipam_dir"],
            "  ipam_dir_legacy = \"%s\";" % paths["ipam_dir_legacy"],
            "  network = \"%s\";" % paths["network_name"],
            "  bridge = \"%s\";" % paths["bridge_name"],
            "  cni_path = \"%s\";" % paths["cni_path"],
            "};",
            "",
        ])
        return write_config(self.tmp, text, name)

    def add(self, status, ports=(), leak_mode="record", hold=False):
        """Create an allocation on the host; status None means Nomad does not know it (404)."""
        alloc_id = str(uuid.uuid4())
        self.lab.add(alloc_id, ports=ports, leak_mode=leak_mode, hold=hold)
        if status is not None:
            self.allocs.append(alloc_record(alloc_id, status))
        return alloc_id

    def snapshot(self, ids):
        return {alloc_id: self.lab.artefacts(alloc_id) for alloc_id in ids}

    def node_plan(self, config, expect=0):
        return self.plan_json("--scope", "node", "--config", config, expect=expect)

    def standard_host(self):
        """Four leaked allocations (one shadowing a live port) and three live ones."""
        self.shadowing = self.add("complete", ports=[(PORT, 8080)])
        self.leaked = [
            self.shadowing,
            self.add("lost", ports=[(OTHER_PORTS[0], 8080)], leak_mode="netns"),
            self.add("failed", leak_mode="stale-file"),
            self.add(None),
        ]
        self.shadowed = self.add("running", ports=[(PORT, 8080)])
        self.live = [self.shadowed, self.add("running", ports=[(OTHER_PORTS[1], 8080)]), self.add("running")]
        self.serve()
        self.assertEqual(self.lab.effective_dnat(PORT)["alloc_id"], self.shadowing)


class Cleanup(NodeScope):
    def test_enforce_removes_exactly_the_leaks(self):
        self.standard_host()
        live_before = self.snapshot(self.live)
        proc = self.medic("once", "--scope", "node", "--config", self.node_policy())
        for alloc_id in self.leaked:
            self.assertEqual(self.lab.artefacts(alloc_id), [], "left of %s:\n%s" % (alloc_id, proc.stderr))
        self.assertEqual(self.snapshot(self.live), live_before)
        self.assertEqual(self.lab.effective_dnat(PORT)["alloc_id"], self.shadowed)
        rows = self.journal_rows("kind = 'netns_clear'")
        self.assertEqual(sorted(r["target"] for r in rows), sorted(self.leaked))
        self.assertEqual({r["state"] for r in rows}, {"succeeded"})
        self.assertEqual(self.mutating(), [])

        # A second pass finds nothing to do.
        plan = self.node_plan(self.node_policy(name="again.conf"))
        self.assertEqual(plan["actions"], [])
        self.medic("once", "--scope", "node", "--config", self.node_policy(name="again.conf"))
        self.assertEqual(len(self.journal_rows("kind = 'netns_clear'")), len(self.leaked))

    def test_node_id_from_local_agent(self):
        leaked = self.add("complete")
        live = self.add("running")
        self.serve()
        live_before = self.lab.artefacts(live)
        config = self.node_policy(node_id="")
        self.medic("once", "--scope", "node", "--config", config)
        self.assertEqual(self.lab.artefacts(leaked), [])
        self.assertEqual(self.lab.artefacts(live), live_before)
        self.assertIn("/v1/agent/self", [r["path"] for r in self.nomad.requests()])

    def test_steps_are_journaled(self):
        self.standard_host()
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        row = self.journal_rows("kind = 'netns_clear' AND target = '%s'" % self.shadowing)[0]
        shown = json.loads(self.medic("actions", "show", str(row["id"]), "--json", "--db", self.db).stdout)
        names = [step["name"] for step in shown["steps"]]
        self.assertIn("cni_del", names)
        self.assertIn("netns_remove", names)
        self.assertLess(names.index("cni_del"), names.index("netns_remove"))
        self.assertEqual({s["outcome"] for s in shown["steps"]} - {"ok", "skipped"}, set())

    def test_port_conflict_reported(self):
        self.standard_host()
        plan = self.node_plan(self.node_policy(mode="dry-run"))
        conflicts = [a for a in plan["advisories"] if a["rule"] == "port_conflicts"]
        self.assertTrue(conflicts)
        evidence = conflicts[0]["evidence"]
        self.assertEqual(evidence["effective_alloc"], self.shadowing)
        self.assertIn(self.shadowed, [s["alloc_id"] for s in evidence["shadowed"]])
        self.assertIn(self.shadowing, conflicts[0]["reason"])
        self.assertIn(self.shadowed, conflicts[0]["reason"])


class LeaveUntouched(NodeScope):
    def test_dry_run_changes_nothing(self):
        self.standard_host()
        before = self.snapshot(self.leaked + self.live)
        self.medic("once", "--scope", "node", "--config", self.node_policy(mode="dry-run"))
        self.assertEqual(self.snapshot(self.leaked + self.live), before)
        rows = self.journal_rows("kind = 'netns_clear'")
        self.assertEqual(sorted(r["target"] for r in rows), sorted(self.leaked))
        self.assertEqual({r["state"] for r in rows}, {"dry_run"})

    def test_approve_mode_changes_nothing(self):
        self.standard_host()
        before = self.snapshot(self.leaked + self.live)
        self.medic("once", "--scope", "node", "--config", self.node_policy(mode="approve"))
        self.assertEqual(self.snapshot(self.leaked + self.live), before)
        rows = self.journal_rows("kind = 'netns_clear'")
        self.assertEqual({r["state"] for r in rows}, {"pending_approval"})

    def test_api_failure_changes_nothing(self):
        self.standard_host()
        before = self.snapshot(self.leaked + self.live)
        self.nomad.faults([{"path": "/v1/node/%s/allocations" % NODE_ID, "status": 500, "body": "rpc error"}])
        proc = self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertEqual(self.snapshot(self.leaked + self.live), before)
        self.assertIn("node allocations", proc.stdout)

    def test_failed_lookup_blocks_that_allocation(self):
        self.standard_host()
        absent = self.leaked[3]
        before = self.lab.artefacts(absent)
        self.nomad.faults([{"path": "/v1/allocation/%s" % absent, "status": 500, "body": "rpc error"}])
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertEqual(self.lab.artefacts(absent), before)
        for alloc_id in self.leaked[:3]:
            self.assertEqual(self.lab.artefacts(alloc_id), [])

    def test_pending_allocation_untouched(self):
        pending = self.add("pending", ports=[(OTHER_PORTS[0], 8080)])
        unknown = self.add("unknown")
        self.serve()
        before = self.snapshot([pending, unknown])
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertEqual(self.snapshot([pending, unknown]), before)
        self.assertEqual(self.journal_rows("kind = 'netns_clear'"), [])

    def test_foreign_namespace_untouched(self):
        name = "nmit-foreign-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.foreign.append(name)
        leaked = self.add(None)
        self.serve()
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertTrue(os.path.exists(os.path.join("/var/run/netns", name)))
        self.assertEqual(self.lab.artefacts(leaked), [])

    def test_uuid_namespace_without_network_state_untouched(self):
        name = str(uuid.uuid4())
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.foreign.append(name)
        self.serve()
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertTrue(os.path.exists(os.path.join("/var/run/netns", name)))
        self.assertEqual(self.journal_rows("kind = 'netns_clear'"), [])

    def test_held_namespace_reported_not_swept(self):
        held = self.add("complete", hold=True)
        unnamed = self.add("lost", leak_mode="held")
        self.serve()
        before = self.snapshot([held, unnamed])
        proc = self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertEqual(self.snapshot([held, unnamed]), before)
        self.assertIn("blocked by precheck", proc.stdout)
        blocked = self.journal_rows("kind = 'netns_clear' AND state = 'blocked'")
        self.assertEqual(sorted(r["target"] for r in blocked), sorted([held, unnamed]))

    def test_grace_period_holds(self):
        self.standard_host()
        before = self.snapshot(self.leaked)
        proc = self.medic("once", "--scope", "node", "--config", self.node_policy(grace="1h"))
        self.assertEqual(self.snapshot(self.leaked), before)
        self.assertIn("blocked by grace", proc.stdout)


class LegacyLayout(NodeScope):
    legacy_ipam = True

    def test_old_layout_reservation_removed(self):
        leaked = self.add("complete")
        live = self.add("running")
        self.serve()
        described = self.lab.describe(leaked)
        self.assertIn(self.lab.legacy_ipam_dir, described["reservation"])
        live_before = self.lab.artefacts(live)
        self.medic("once", "--scope", "node", "--config", self.node_policy())
        self.assertEqual(self.lab.artefacts(leaked), [])
        self.assertEqual(self.lab.artefacts(live), live_before)


if __name__ == "__main__":
    unittest.main()
