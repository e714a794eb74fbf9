"""system_gc: thresholds, rate limit, and never while a node is down."""

import unittest

from medic import MedicTestCase, scenarios

GC_RULE = 'enabled = true; min_terminal_allocs = 10; min_terminal_evals = 10; cooldown = "0s"; rate_limit = "1/h";'


class GarbageCollection(MedicTestCase):
    scenario = staticmethod(scenarios.gc_pileup)

    def gc_requests(self):
        return [r for r in self.mutating() if r["path"] == "/v1/system/gc"]

    def test_gc_runs_once_when_over_threshold(self):
        config = self.policy(system_gc=GC_RULE)
        self.medic("once", "--config", config)
        self.assertEqual(len(self.gc_requests()), 1)
        self.assertEqual(self.gc_requests()[0]["method"], "PUT")

    def test_gc_rate_limited_across_restart(self):
        config = self.policy(system_gc=GC_RULE)
        self.medic("once", "--config", config)
        # Refill the pile; the 1/h bucket is empty, so no second GC in this hour.
        self.nomad.load(scenarios.gc_pileup())
        proc = self.medic("once", "--config", config)
        self.assertEqual(len(self.gc_requests()), 1)
        self.assertIn("blocked by rate_limit", proc.stdout)

    def test_gc_under_threshold_does_nothing(self):
        config = self.policy(system_gc='min_terminal_allocs = 100000; min_terminal_evals = 100000;')
        self.medic("once", "--config", config)
        self.assertEqual(self.gc_requests(), [])


class GarbageCollectionDownNode(MedicTestCase):
    scenario = staticmethod(lambda: scenarios.gc_pileup(down_node=True))

    def test_gc_never_while_node_down(self):
        config = self.policy(system_gc=GC_RULE)
        proc = self.medic("once", "--config", config)
        self.assertEqual([r for r in self.mutating() if r["path"] == "/v1/system/gc"], [])
        self.assertIn("blocked by precheck", proc.stdout)
        self.assertIn("down or disconnected", proc.stdout)


if __name__ == "__main__":
    unittest.main()
