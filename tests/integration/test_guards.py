"""Guards: pause file, rate limits and cooldowns that survive restarts, circuit breaker, grace."""

import os
import unittest

from medic import MedicTestCase, scenarios


class Guards(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_pause_file_stops_every_action(self):
        pause = os.path.join(self.tmp, "pause")
        open(pause, "w").close()
        proc = self.medic("once", "--config", self.policy(pause_file=pause))
        self.assertEqual(self.mutating(), [])
        self.assertIn("blocked by pause", proc.stdout)
        os.unlink(pause)
        self.medic("once", "--config", self.policy(pause_file=pause))
        self.assertEqual(self.deletes(), scenarios.orphan_ids(self.data))

    def test_rule_rate_limit_holds_across_restarts(self):
        config = self.policy(rate_limit="3/h")
        self.medic("once", "--config", config)
        self.assertEqual(len(self.deletes()), 3)
        # A new process, the same journal: the bucket is still empty.
        self.medic("once", "--config", config)
        self.assertEqual(len(self.deletes()), 3)
        blocked = self.journal_rows("state = 'blocked' AND blocked_by = 'rate_limit'")
        self.assertEqual(len(blocked), len(scenarios.orphan_ids(self.data)) - 3)

    def test_global_rate_limit(self):
        config = self.policy(extra="")
        text = open(config).read().replace('  mode = "enforce";', '  mode = "enforce";\n  rate_limit = "2/h";', 1)
        with open(config, "w") as handle:
            handle.write(text)
        self.medic("once", "--config", config)
        self.assertEqual(len(self.deletes()), 2)

    def test_cooldown_holds_across_restarts(self):
        config = self.policy(cooldown="1h")
        self.medic("once", "--config", config)
        first = len(self.deletes())
        self.assertEqual(first, len(scenarios.orphan_ids(self.data)))
        # Put one orphan back, as if Nomad re-registered it; the cooldown keeps us off it.
        reg = scenarios.registration(self.data, *sorted(scenarios.orphan_ids(self.data))[0])
        self.nomad.mutate([{"op": "add_service", "service": reg}])
        proc = self.medic("once", "--config", config)
        self.assertEqual(len(self.nomad.service_deletes()), first)
        self.assertIn("blocked by cooldown", proc.stdout)

    def test_grace_period_delays_deletion(self):
        config = self.policy(grace="1h")
        proc = self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        self.assertIn("blocked by grace", proc.stdout)
        findings = self.journal_rows("state = 'blocked' AND blocked_by = 'grace'")
        self.assertEqual(len(findings), len(scenarios.orphan_ids(self.data)))


class Breaker(MedicTestCase):
    @staticmethod
    def scenario():
        data = scenarios.two_namespaces(disconnected_node=False)
        # Three of four clients down: far above the 30% default share.
        for node in data["nodes"][:3]:
            node["Status"] = "down"
        return data

    def test_breaker_blocks_service_actions(self):
        proc = self.medic("once", "--config", self.policy())
        self.assertEqual(self.mutating(), [])
        self.assertIn("blocked by breaker", proc.stdout)


if __name__ == "__main__":
    unittest.main()
