"""Fail closed: every kind of failed or doubtful read leads to zero mutating requests."""

import unittest

from medic import MedicTestCase, scenarios


class FailClosed(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def assert_no_writes_with(self, faults, expect_in_output=None):
        self.nomad.faults(faults)
        proc = self.medic("once", "--config", self.policy())
        self.assertEqual(self.mutating(), [], "writes happened with faults %r" % faults)
        if expect_in_output is not None:
            self.assertIn(expect_in_output, proc.stdout + proc.stderr)
        return proc

    def test_allocations_500(self):
        proc = self.assert_no_writes_with([{"path": "/v1/allocations", "status": 500, "body": "rpc error"}])
        self.assertIn("Rule orphan_services skipped: read allocations failed", proc.stdout)

    def test_allocations_truncated(self):
        self.assert_no_writes_with([{"path": "/v1/allocations", "truncate": True}], "allocations")

    def test_allocations_dropped(self):
        self.assert_no_writes_with([{"path": "/v1/allocations", "drop": True}], "allocations")

    def test_allocations_timeout(self):
        config = self.policy()
        # A 1 s request timeout with one retry, against a 3 s delay.
        text = open(config).read().replace("nomad = {", 'nomad = {\n  timeout = "1s";\n  retries = 1;', 1)
        with open(config, "w") as handle:
            handle.write(text)
        self.nomad.faults([{"path": "/v1/allocations", "delay_ms": 3000}])
        proc = self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        self.assertIn("allocations", proc.stdout)

    def test_services_list_500(self):
        proc = self.assert_no_writes_with([{"path": "/v1/services", "status": 500, "body": "boom"}])
        self.assertIn("read services failed", proc.stdout)

    def test_services_invalid_json(self):
        self.assert_no_writes_with([{"path": "/v1/services", "status": 200, "body": "[{\"Namespace\": "}])

    def test_known_leader_false(self):
        self.assert_no_writes_with([{"path": "/v1/allocations", "known_leader": False}], "allocations")

    def test_no_leader(self):
        self.nomad.mutate([{"op": "set_leader", "leader": ""}])
        proc = self.medic("once", "--config", self.policy())
        self.assertEqual(self.mutating(), [])
        self.assertIn("leader", proc.stdout)

    def test_forbidden_token(self):
        self.nomad.load(scenarios.two_namespaces(acl_token="right-token"))
        proc = self.medic("once", "--config", self.policy(token="wrong-token"))
        self.assertEqual(self.mutating(), [])
        self.assertNotIn("wrong-token", proc.stdout + proc.stderr)

    def test_empty_allocation_list_never_orphans_everything(self):
        # A server that answers an empty list: every registration gets its own lookup,
        # and only the 404s of truly absent allocations count.
        self.nomad.faults([{"path": "/v1/allocations", "status": 200, "body": "[]"}])
        self.medic("once", "--config", self.policy())
        self.assertEqual(set(self.deletes()), scenarios.orphan_ids(self.data))

    def test_failed_lookup_blocks_only_that_action(self):
        absent = [reg for reg, kind in scenarios.expected(self.data)["orphan_kind"].items() if kind == "absent"]
        self.assertEqual(len(absent), 2)
        reg = [r for r in self.data["services"] if r["ID"] == absent[0]][0]
        self.nomad.faults([{"path": "/v1/allocation/%s" % reg["AllocID"], "status": 500, "body": "rpc error"}])
        self.medic("once", "--config", self.policy())
        expected = scenarios.orphan_ids(self.data) - {(reg["Namespace"], reg["ID"])}
        self.assertEqual(set(self.deletes()), expected)
        blocked = self.journal_rows("state = 'blocked' AND blocked_by = 'reads'")
        self.assertEqual([r["target"] for r in blocked], [reg["ID"]])

    def test_failed_service_read_blocks_nothing_else(self):
        self.nomad.faults([{"path_prefix": "/v1/service/web-http", "status": 500, "body": "boom"}])
        self.medic("once", "--config", self.policy())
        web = {k for k in scenarios.orphan_ids(self.data)
               if scenarios.registration(self.data, k[0], k[1])["ServiceName"] == "web-http"}
        self.assertTrue(web)
        self.assertEqual(set(self.deletes()), scenarios.orphan_ids(self.data) - web)

    def test_delete_failure_is_journaled(self):
        self.nomad.faults([{"method": "DELETE", "path_prefix": "/v1/service/", "status": 500,
                            "body": "rpc error: permission denied"}])
        self.medic("once", "--config", self.policy())
        rows = self.journal_rows("kind = 'service_delete'")
        self.assertEqual({r["state"] for r in rows}, {"failed"})
        self.assertIn("rpc error", rows[0]["last_error"])

    def test_registration_already_gone_counts_as_success(self):
        self.nomad.faults([{"method": "DELETE", "path_prefix": "/v1/service/", "status": 500,
                            "body": "service registration not found"}])
        self.medic("once", "--config", self.policy())
        rows = self.journal_rows("kind = 'service_delete'")
        self.assertEqual({r["state"] for r in rows}, {"succeeded"})
        self.assertIn("already gone", rows[0]["last_error"])

    def test_invalid_address_is_rejected(self):
        config = self.policy()
        text = open(config).read().replace(self.nomad.address, "ftp://127.0.0.1:1")
        with open(config, "w") as handle:
            handle.write(text)
        proc = self.medic("once", "--config", config, expect=1)
        self.assertIn("address", proc.stderr)


if __name__ == "__main__":
    unittest.main()
