"""A crash between the `executing` commit and the request leaves a consistent journal and no blind repeat."""

import os
import signal
import subprocess
import time
import unittest

from medic import MedicTestCase, scenarios


class CrashRecovery(MedicTestCase):
    scenario = staticmethod(scenarios.two_namespaces)

    def test_crash_after_commit_before_request(self):
        config = self.policy(rate_limit="1/h")
        proc = self.medic("once", "--config", config,
                          env={"NOMAD_MEDIC_TEST_CRASH": "after_executing_commit"}, expect=None)
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        self.assertEqual(self.mutating(), [])
        rows = self.journal_rows()
        executing = [r for r in rows if r["state"] == "executing"]
        self.assertEqual(len(executing), 1)
        target = executing[0]["target"]

        # Restart: the row is re-checked (registration still present), marked failed, and the
        # single token the crashed attempt took keeps this hour's limit: nothing is sent.
        self.medic("once", "--config", config)
        self.assertEqual(self.mutating(), [])
        row = self.journal_rows("id = %d" % executing[0]["id"])[0]
        self.assertEqual(row["state"], "failed")
        self.assertIn("interrupted", row["last_error"])
        self.assertEqual(row["target"], target)

    def test_crash_with_request_in_flight(self):
        config = self.policy(rate_limit="1/h")
        # The DELETE reaches Nomad and is applied, but the answer never reaches us.
        self.nomad.faults([{"method": "DELETE", "path_prefix": "/v1/service/", "delay_ms": 30000}])
        binary = os.environ["NOMAD_MEDIC_BIN"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        child = subprocess.Popen([binary, "once", "--config", config], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            while time.time() < deadline and not self.mutating():
                time.sleep(0.1)
            self.assertEqual(len(self.mutating()), 1)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        self.nomad.clear_faults()
        executing = self.journal_rows("state = 'executing'")
        self.assertEqual(len(executing), 1)

        # The fake applies a delayed request only after its delay, so remove the registration
        # the way Nomad would have, then restart: the row resolves to succeeded, no repeat.
        namespace, reg_id = executing[0]["namespace_name"], executing[0]["target"]
        self.nomad.mutate([{"op": "remove_service", "namespace": namespace, "id": reg_id}])
        self.nomad.clear_requests()
        self.medic("once", "--config", config)
        self.assertNotIn((namespace, reg_id), self.deletes())
        row = self.journal_rows("id = %d" % executing[0]["id"])[0]
        self.assertEqual(row["state"], "succeeded")
        self.assertIn("interrupted", row["last_error"])


if __name__ == "__main__":
    unittest.main()
