"""Approve mode: queue, approve one, reject, expiry, and approvals voided by changed evidence."""

import json
import time
import unittest

from medic import MedicTestCase, scenarios


class Approval(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def pending(self):
        rows = json.loads(self.medic("actions", "list", "--json", "--db", self.db).stdout)
        return [r for r in rows if r["state"] == "pending_approval"]

    def test_approve_mode_queues_without_writes(self):
        self.medic("once", "--config", self.policy(mode="approve"))
        self.assertEqual(self.mutating(), [])
        self.assertEqual(len(self.pending()), len(scenarios.orphan_ids(self.data)))

    def test_second_pass_does_not_queue_twice(self):
        config = self.policy(mode="approve")
        self.medic("once", "--config", config)
        self.medic("once", "--config", config)
        self.assertEqual(len(self.pending()), len(scenarios.orphan_ids(self.data)))

    def test_approve_one_runs_only_that_one(self):
        config = self.policy(mode="approve")
        self.medic("once", "--config", config)
        chosen = self.pending()[0]
        proc = self.medic("actions", "approve", str(chosen["id"]), "--db", self.db, "--by", "alice")
        self.assertIn("approved by cli:alice", proc.stdout)
        self.medic("once", "--config", config)
        self.assertEqual(self.deletes(), {(chosen["namespace"], chosen["target"])})
        shown = json.loads(self.medic("actions", "show", str(chosen["id"]), "--json", "--db", self.db).stdout)
        self.assertEqual(shown["state"], "succeeded")
        self.assertEqual(shown["decided_by"], "cli:alice")

    def test_reject_never_runs(self):
        config = self.policy(mode="approve")
        self.medic("once", "--config", config)
        chosen = self.pending()[0]
        self.medic("actions", "reject", str(chosen["id"]), "--db", self.db)
        self.medic("once", "--config", config)
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        shown = json.loads(self.medic("actions", "show", str(chosen["id"]), "--json", "--db", self.db).stdout)
        self.assertEqual(shown["state"], "rejected")
        # Approving a rejected action is refused.
        proc = self.medic("actions", "approve", str(chosen["id"]), "--db", self.db, expect=1)
        self.assertIn("cannot approve", proc.stderr)
        # The rejection remains in force: the same action is not queued again while its evidence is the same.
        requeued = [r for r in self.pending() if r["target"] == chosen["target"]]
        self.assertEqual(requeued, [])
        blocked = self.journal_rows("state = 'blocked' AND blocked_by = 'rejected'")
        self.assertEqual([r["target"] for r in blocked], [chosen["target"]])

    def test_rejection_holds_in_enforce_mode(self):
        self.medic("once", "--config", self.policy(mode="approve"))
        chosen = self.pending()[0]
        self.medic("actions", "reject", str(chosen["id"]), "--db", self.db)
        self.medic("once", "--config", self.policy(mode="enforce", name="enforce.conf"))
        deleted = self.deletes()
        self.assertNotIn((chosen["namespace"], chosen["target"]), deleted)
        self.assertEqual(len(deleted), len(scenarios.orphan_ids(self.data)) - 1)

    def test_approval_expires(self):
        config = self.policy(mode="approve", approval_ttl="1s")
        self.medic("once", "--config", config)
        chosen = self.pending()[0]
        expires_at = self.journal_rows("id = %d" % chosen["id"])[0]["expires_at"]
        time.sleep(max(0.0, expires_at - time.time()) + 1.2)
        proc = self.medic("actions", "approve", str(chosen["id"]), "--db", self.db, expect=1)
        self.assertIn("expired", proc.stderr)
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])

    def test_approved_action_expires_before_it_runs(self):
        config = self.policy(mode="approve", approval_ttl="8s")
        self.medic("once", "--config", config)
        chosen = self.pending()[0]
        self.medic("actions", "approve", str(chosen["id"]), "--db", self.db)
        expires_at = self.journal_rows("id = %d" % chosen["id"])[0]["expires_at"]
        self.assertGreater(expires_at, 0)
        time.sleep(max(0.0, expires_at - time.time()) + 1.2)
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])

    def test_approval_void_when_evidence_changed(self):
        config = self.policy(mode="approve")
        self.medic("once", "--config", config)
        kinds = scenarios.expected(self.data)["orphan_kind"]
        chosen = [r for r in self.pending() if kinds[r["target"]] == "complete"][0]
        self.medic("actions", "approve", str(chosen["id"]), "--db", self.db)
        # The allocation is now lost rather than complete: the approval was given for other evidence.
        self.nomad.mutate([{"op": "set_alloc_status", "id": chosen["alloc_id"], "client_status": "lost"}])
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        shown = json.loads(self.medic("actions", "show", str(chosen["id"]), "--json", "--db", self.db).stdout)
        self.assertEqual(shown["state"], "blocked")
        self.assertIn("evidence changed", shown["last_error"])
        requeued = [r for r in self.pending() if r["target"] == chosen["target"]]
        self.assertEqual(len(requeued), 1)

    def test_approval_void_when_allocation_came_back(self):
        config = self.policy(mode="approve")
        self.medic("once", "--config", config)
        kinds = scenarios.expected(self.data)["orphan_kind"]
        chosen = [r for r in self.pending() if kinds[r["target"]] == "failed"][0]
        self.medic("actions", "approve", str(chosen["id"]), "--db", self.db)
        self.nomad.mutate([{"op": "set_alloc_status", "id": chosen["alloc_id"], "client_status": "running"}])
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        shown = json.loads(self.medic("actions", "show", str(chosen["id"]), "--json", "--db", self.db).stdout)
        self.assertEqual(shown["state"], "blocked")

    def test_unknown_action_id(self):
        self.medic("once", "--config", self.policy(mode="approve"))
        proc = self.medic("actions", "approve", "99999", "--db", self.db, expect=1)
        self.assertIn("no action 99999", proc.stderr)
        proc = self.medic("actions", "approve", "abc", "--db", self.db, expect=1)
        self.assertIn("invalid action ID", proc.stderr)


if __name__ == "__main__":
    unittest.main()
