"""Shared fixtures for the integration tests: a fake Nomad, a temp dir, a policy, runs of the binary."""

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_nomad"))

import scenarios  # noqa: E402  (path set above)
from harness import FakeNomad, run_medic, write_config, zero_grace_policy  # noqa: E402


class MedicTestCase(unittest.TestCase):
    """Starts a fake Nomad with `scenario` and gives each test a temp dir and journal path."""

    scenario = None   # a callable returning a scenario dict

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="nomad-medic-test-")
        self.db = os.path.join(self.tmp, "journal.db")
        self.nomad = FakeNomad()
        self.nomad.start()
        self.data = self.scenario() if self.scenario else scenarios.healthy()
        self.nomad.load(self.data)

    def tearDown(self):
        self.nomad.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def policy(self, name="policy.conf", **kwargs):
        """Write a zero-grace policy pointing at the fake Nomad and return its path."""
        return write_config(self.tmp, zero_grace_policy(self.nomad.address, self.db, **kwargs), name)

    def medic(self, *args, env=None, timeout=60, expect=0):
        """Run the binary; fail the test with its output when the exit status is not `expect`."""
        proc = run_medic(list(args), env=env, timeout=timeout)
        if expect is not None:
            self.assertEqual(proc.returncode, expect,
                             "nomad-medic %s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def plan_json(self, *args, expect=0):
        proc = self.medic("plan", "--json", *args, expect=expect)
        return json.loads(proc.stdout)

    def journal_rows(self, where="1=1"):
        """Rows of the actions table as dicts (read directly, as an operator with sqlite3 would)."""
        con = sqlite3.connect(self.db)
        con.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in con.execute("SELECT * FROM actions WHERE %s ORDER BY id" % where)]
        finally:
            con.close()

    def deletes(self):
        """(namespace, registration ID) of every DELETE the fake Nomad received."""
        return set(self.nomad.service_deletes())

    def mutating(self):
        """Every request that is not a GET, except coordination: the leadership lock and host heartbeats.

        A pass that can act takes the lock, and the node scope reports its host alive; neither
        is an action on the cluster. all_writes() includes them, for the cluster dry-run checks.
        """
        return [r for r in self.nomad.writes()
                if r["path"] != "/v1/var/nomad-medic/lock"
                and not r["path"].startswith("/v1/var/nomad-medic/heartbeat/")]

    def all_writes(self):
        """Every request that is not a GET, the lock included."""
        return self.nomad.writes()
