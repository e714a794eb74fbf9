"""Orphaned service registrations: exactly the orphans are deleted, nothing else, across namespaces."""

import json
import unittest

from medic import MedicTestCase, scenarios


class OrphanEnforce(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_enforce_deletes_exactly_orphans(self):
        config = self.policy()
        self.medic("once", "--config", config, "--mode", "enforce")
        self.assertEqual(self.deletes(), scenarios.orphan_ids(self.data))
        for key in scenarios.protected_ids(self.data):
            self.assertNotIn(key, self.deletes())

    def test_second_pass_does_nothing(self):
        config = self.policy()
        self.medic("once", "--config", config)
        self.nomad.clear_requests()
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        plan = self.plan_json("--config", config)
        self.assertEqual([a for a in plan["actions"] if a["kind"] == "service_delete"], [])

    def test_each_orphan_kind_is_found(self):
        kinds = scenarios.expected(self.data)["orphan_kind"]
        self.assertEqual(sorted(set(kinds.values())), ["absent", "complete", "failed", "lost"])
        plan = self.plan_json("--config", self.policy())
        reasons = {a["target"]: a["reason"] for a in plan["actions"] if a["kind"] == "service_delete"}
        for reg_id, kind in kinds.items():
            self.assertIn(reg_id, reasons)
            expected_word = "no longer exists" if kind == "absent" else "is %s" % kind
            self.assertIn(expected_word, reasons[reg_id])

    def test_protected_registrations_never_proposed(self):
        plan = self.plan_json("--config", self.policy())
        proposed = {(a["namespace"], a["target"]) for a in plan["actions"] if a["kind"] == "service_delete"}
        self.assertEqual(proposed & scenarios.protected_ids(self.data), set())
        self.assertEqual(proposed, scenarios.orphan_ids(self.data))

    def test_delete_uses_registration_namespace(self):
        self.medic("once", "--config", self.policy())
        for entry in self.nomad.requests():
            if entry["method"] == "DELETE":
                reg_id = entry["path"].split("/")[4]
                namespace = entry["params"]["namespace"]
                self.assertIn((namespace, reg_id), scenarios.orphan_ids(self.data))

    def test_journal_rows_succeeded(self):
        self.medic("once", "--config", self.policy())
        rows = self.journal_rows("kind = 'service_delete'")
        self.assertEqual(len(rows), len(scenarios.orphan_ids(self.data)))
        self.assertEqual({r["state"] for r in rows}, {"succeeded"})
        history = json.loads(self.medic("history", "--json", "--db", self.db).stdout)
        self.assertEqual(len(history), len(rows))
        for row in history:
            for key in ("id", "kind", "target", "state"):
                self.assertIn(key, row)


class Pagination(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_small_pages_give_the_same_result(self):
        config = self.policy()
        text = open(config).read().replace("nomad = {", "nomad = {\n  per_page = 2;", 1)
        with open(config, "w") as handle:
            handle.write(text)
        self.medic("once", "--config", config)
        self.assertEqual(self.deletes(), scenarios.orphan_ids(self.data))
        paged = [r for r in self.nomad.requests()
                 if r["path"] == "/v1/allocations" and "next_token" in r["params"]]
        self.assertGreater(len(paged), 3)
        service_pages = [r for r in self.nomad.requests()
                         if r["path"].startswith("/v1/service/") and "next_token" in r["params"]]
        self.assertTrue(service_pages)


class OrphanDryRun(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_dry_run_sends_no_mutating_request(self):
        config = self.policy(mode="dry-run")
        self.medic("once", "--config", config)
        self.assertEqual(self.all_writes(), [])
        rows = self.journal_rows()
        self.assertEqual({r["state"] for r in rows if r["kind"] == "service_delete"}, {"dry_run"})
        self.assertEqual(len([r for r in rows if r["kind"] == "service_delete"]),
                         len(scenarios.orphan_ids(self.data)))

    def test_dry_run_repeated_does_not_grow_journal(self):
        config = self.policy(mode="dry-run")
        self.medic("once", "--config", config)
        first = len(self.journal_rows())
        self.medic("once", "--config", config)
        rows = self.journal_rows()
        self.assertEqual(len(rows), first)
        self.assertEqual({r["times_seen"] for r in rows if r["kind"] == "service_delete"}, {2})
        self.assertEqual(self.all_writes(), [])

    def test_mode_override_beats_policy(self):
        config = self.policy(mode="enforce")
        self.medic("once", "--config", config, "--mode", "dry-run")
        self.assertEqual(self.all_writes(), [])

    def test_default_policy_is_dry_run(self):
        proc = self.medic("once", "--db", self.db, env={"NOMAD_ADDR": self.nomad.address})
        self.assertIn("global mode dry-run", proc.stdout)
        # The built-in grace period (10m) holds back brand-new orphans.
        self.assertIn("blocked by grace", proc.stdout)
        self.assertEqual(self.all_writes(), [])


class PlanOutput(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_plan_json_fields(self):
        plan = self.plan_json("--config", self.policy())
        self.assertIn("actions", plan)
        deletes = [a for a in plan["actions"] if a["kind"] == "service_delete"]
        self.assertTrue(deletes)
        for action in deletes:
            for key in ("kind", "target", "rule", "reason", "namespace", "service", "alloc_id"):
                self.assertIn(key, action)
            self.assertEqual(action["rule"], "orphan_services")
        self.assertEqual(self.mutating(), [])

    def test_plan_detailed_exitcode_two_when_proposed(self):
        self.medic("plan", "--config", self.policy(), "--detailed-exitcode", expect=2)

    def test_plan_writes_no_journal(self):
        self.medic("plan", "--config", self.policy())
        self.assertEqual(self.mutating(), [])
        import os
        self.assertFalse(os.path.exists(self.db))

    def test_disconnected_node_is_advisory(self):
        plan = self.plan_json("--config", self.policy())
        rules = {a["rule"] for a in plan["advisories"]}
        self.assertIn("down_nodes", rules)
        advisory = [a for a in plan["advisories"] if a["rule"] == "down_nodes"][0]
        self.assertIn("affected_allocation_count", advisory["evidence"])
        self.assertIn("since", advisory["evidence"])


class AdvisoriesOnly(MedicTestCase):
    @staticmethod
    def scenario():
        data = scenarios.healthy()
        data["nodes"][0]["Status"] = "down"
        return data

    def test_advisories_alone_exit_zero(self):
        proc = self.medic("plan", "--config", self.policy(), "--detailed-exitcode", expect=0)
        self.assertIn("Advisories (1)", proc.stdout)
        self.assertIn("is down since", proc.stdout)


class HealthyCluster(MedicTestCase):
    scenario = staticmethod(scenarios.healthy)

    def test_healthy_plan_exits_zero(self):
        proc = self.medic("plan", "--config", self.policy(), "--detailed-exitcode", expect=0)
        self.assertIn("Actions (0)", proc.stdout)


if __name__ == "__main__":
    unittest.main()
