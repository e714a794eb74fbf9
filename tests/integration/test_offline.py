"""Offline input: capture -> plan --from-capture round trip, and `nomad operator debug` bundles."""

import json
import os
import tarfile
import unittest

from medic import MedicTestCase, scenarios


def action_keys(plan):
    return sorted((a["kind"], a.get("namespace", ""), a["target"], a["status"]) for a in plan["actions"])


class CaptureRoundTrip(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_capture_then_plan_matches_live_plan(self):
        config = self.policy(mode="dry-run")
        live = self.plan_json("--config", config)
        capture = os.path.join(self.tmp, "capture")
        proc = self.medic("capture", capture, "--config", config)
        self.assertIn("captured", proc.stdout)
        self.assertEqual(self.mutating(), [])
        self.nomad.stop()  # the offline plan must not need the API
        offline = self.plan_json("--config", config, "--from-capture", capture)
        self.assertEqual(action_keys(offline), action_keys(live))
        self.assertEqual(offline["source"], "capture")
        self.assertEqual(len(offline["advisories"]), len(live["advisories"]))

    def test_capture_holds_no_token(self):
        self.nomad.load(scenarios.two_namespaces(acl_token="s3cret-token-value"))
        config = self.policy(token="s3cret-token-value")
        capture = os.path.join(self.tmp, "capture")
        self.medic("capture", capture, "--config", config)
        for name in os.listdir(capture):
            with open(os.path.join(capture, name), "rb") as handle:
                self.assertNotIn(b"s3cret-token-value", handle.read(), name)

    def test_capture_refuses_existing_capture(self):
        capture = os.path.join(self.tmp, "capture")
        config = self.policy()
        self.medic("capture", capture, "--config", config)
        proc = self.medic("capture", capture, "--config", config, expect=1)
        self.assertIn(capture, proc.stderr)

    def test_capture_of_failed_read_is_failed_read(self):
        self.nomad.faults([{"path": "/v1/allocations", "status": 500, "body": "rpc error"}])
        capture = os.path.join(self.tmp, "capture")
        config = self.policy()
        self.medic("capture", capture, "--config", config)
        plan = self.plan_json("--config", config, "--from-capture", capture, expect=1)
        self.assertFalse(plan["complete"])
        self.assertEqual([a for a in plan["actions"] if a["kind"] == "service_delete"], [])


class ShippedExample(MedicTestCase):
    def test_example_capture_plans_with_builtin_policy(self):
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                               "capture-two-namespaces")
        proc = self.medic("plan", "--from-capture", example, "--db", self.db)
        self.assertIn("Actions (8)", proc.stdout)
        self.assertEqual(proc.stdout.count("blocked by grace"), 8)
        self.assertIn("Advisories (1)", proc.stdout)
        plan = self.plan_json("--from-capture", example, "--db", self.db)
        kinds = {a["evidence"]["alloc_status"] for a in plan["actions"]}
        self.assertEqual(kinds, {"complete", "failed", "lost", "absent"})
        self.assertEqual({a["namespace"] for a in plan["actions"]}, {"default", "prod"})


class DebugBundle(MedicTestCase):
    scenario = staticmethod(lambda: scenarios.two_namespaces(down_node=True))

    def make_bundle(self, ndjson=True, error_file=None):
        state = self.nomad.state()
        root = os.path.join(self.tmp, "nomad-debug-2026-12-04-101500Z")
        os.makedirs(os.path.join(root, "cluster"))
        interval = os.path.join(root, "interval", "0001")
        os.makedirs(interval)
        os.makedirs(os.path.join(root, "interval", "0000"))
        nodes = [self.nomad.get("/v1/node/%s" % n["ID"]).json() for n in self.nomad.get("/v1/nodes").json()]
        allocs = self.nomad.get("/v1/allocations?namespace=*&task_states=false").json()
        evals = self.nomad.get("/v1/evaluations?namespace=*").json()
        self.assertTrue(state)

        def write(path, value):
            with open(path, "w") as handle:
                json.dump(value, handle)

        def write_list(path, items):
            with open(path, "w") as handle:
                if ndjson:
                    for item in items:
                        handle.write(json.dumps(item) + "\n")
                else:
                    json.dump(items, handle)

        write(os.path.join(root, "cluster", "leader.json"), "127.0.0.1:4647")
        write(os.path.join(root, "cluster", "nodes.json"), nodes)
        write_list(os.path.join(interval, "nodes.json"), nodes)
        write_list(os.path.join(interval, "allocations.json"), allocs)
        write_list(os.path.join(interval, "evaluations.json"), evals)
        # An older interval with nothing in it, to prove the last one is used.
        write_list(os.path.join(root, "interval", "0000", "allocations.json"), [])
        if error_file is not None:
            write(os.path.join(interval, error_file), {"Error": "Unexpected response code: 403 (Permission denied)"})
        return root

    def gc_policy(self):
        return self.policy(system_gc='min_terminal_allocs = 1; min_terminal_evals = 1;')

    def check_bundle_plan(self, path):
        plan = self.plan_json("--config", self.gc_policy(), "--from-capture", path)
        self.assertEqual(plan["source"], "debug-bundle")
        self.assertIn("service registrations", plan["source_note"])
        rules = {r["rule"]: r for r in plan["rules"]}
        self.assertFalse(rules["orphan_services"]["evaluated"])
        self.assertIn("registrations", rules["orphan_services"]["skipped_because"])
        down = [a for a in plan["advisories"] if a["rule"] == "down_nodes"]
        self.assertEqual(len(down), 2)   # the down node and the disconnected one
        gc = [a for a in plan["actions"] if a["kind"] == "system_gc"]
        self.assertEqual(len(gc), 1)
        self.assertEqual(gc[0]["status"], "blocked")
        self.assertEqual(gc[0]["blocked_by"], "precheck")
        return plan

    def test_bundle_directory_ndjson(self):
        self.check_bundle_plan(self.make_bundle(ndjson=True))

    def test_bundle_directory_array(self):
        self.check_bundle_plan(self.make_bundle(ndjson=False))

    def test_bundle_tar_gz(self):
        root = self.make_bundle()
        archive = os.path.join(self.tmp, "bundle.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=os.path.basename(root))
        self.check_bundle_plan(archive)

    def test_bundle_error_file_is_failed_read(self):
        root = self.make_bundle(error_file="evaluations.json")
        plan = self.plan_json("--config", self.gc_policy(), "--from-capture", root, expect=1)
        rules = {r["rule"]: r for r in plan["rules"]}
        self.assertFalse(rules["system_gc"]["evaluated"])
        self.assertIn("Permission denied", rules["system_gc"]["skipped_because"])
        self.assertEqual([a for a in plan["actions"] if a["kind"] == "system_gc"], [])

    def test_not_a_bundle(self):
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty)
        proc = self.medic("plan", "--from-capture", empty, "--db", self.db, expect=1)
        self.assertIn(empty, proc.stderr)


if __name__ == "__main__":
    unittest.main()
