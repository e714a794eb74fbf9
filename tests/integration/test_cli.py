"""The command line: help, version, invalid input, and policy files with each kind of error."""

import os
import unittest

from medic import MedicTestCase, scenarios, write_config


class CommandLine(MedicTestCase):
    scenario = staticmethod(scenarios.healthy)

    def test_help_for_each_command(self):
        for command in ("run", "once", "plan", "capture", "actions", "history", "version"):
            proc = self.medic(command, "--help")
            self.assertIn("Usage: nomad-medic %s" % command, proc.stdout)
        self.assertIn("Commands:", self.medic("--help").stdout)

    def test_version(self):
        self.assertRegex(self.medic("version").stdout, r"^nomad-medic \d+\.\d+\.\d+")

    def test_unknown_command(self):
        proc = self.medic("heal", expect=1)
        self.assertIn('unknown command "heal"', proc.stderr)

    def test_invalid_mode(self):
        proc = self.medic("plan", "--mode", "yolo", expect=1)
        self.assertIn('invalid --mode "yolo"', proc.stderr)

    def test_invalid_scope(self):
        proc = self.medic("once", "--scope", "galaxy", expect=1)
        self.assertIn('invalid --scope "galaxy"', proc.stderr)

    def test_capture_has_no_node_scope(self):
        proc = self.medic("capture", self.tmp + "/cap", "--scope", "node", expect=1)
        self.assertIn("--scope node goes with run, once or plan", proc.stderr)

    def test_token_never_logged(self):
        self.nomad.load(scenarios.two_namespaces(acl_token="tok-abc-123"))
        config = self.policy(token="tok-abc-123")
        proc = self.medic("once", "--config", config, "--log-level", "debug")
        self.assertNotIn("tok-abc-123", proc.stdout + proc.stderr)
        self.nomad.faults([{"path": "/v1/nodes", "status": 403, "body": "Permission denied"}])
        proc = self.medic("once", "--config", config, "--log-level", "debug")
        self.assertNotIn("tok-abc-123", proc.stdout + proc.stderr)
        import sqlite3
        con = sqlite3.connect(self.db)
        dump = "\n".join(con.iterdump())
        con.close()
        self.assertNotIn("tok-abc-123", dump)

    def test_history_without_journal(self):
        proc = self.medic("history", "--db", os.path.join(self.tmp, "missing.db"), expect=1)
        self.assertIn("no journal", proc.stderr)


class PolicyErrors(MedicTestCase):
    scenario = staticmethod(scenarios.healthy)

    CASES = [
        ("syntax", "controller = {\n  mode = ;\n};\n", ":2:"),
        ("unknown setting", "controller = {\n  modee = \"dry-run\";\n};\n", ":2: controller.modee"),
        ("bad duration", "rules = {\n  orphan_services = {\n    grace = \"ten minutes\";\n  };\n};\n",
         ":3: rules.orphan_services.grace"),
        ("bad rate", "controller = {\n  rate_limit = \"lots\";\n};\n", ":2: controller.rate_limit"),
        ("bad mode", "controller = {\n  mode = \"sometimes\";\n};\n", ":2: controller.mode"),
        ("bad share", "controller = {\n  breaker = { max_unhealthy_share = 2.5; };\n};\n",
         ":2: controller.breaker.max_unhealthy_share"),
        ("wrong type", "rules = {\n  system_gc = { min_terminal_allocs = \"many\"; };\n};\n",
         ":2: rules.system_gc.min_terminal_allocs"),
    ]

    def test_each_policy_error_names_file_and_line(self):
        for name, text, fragment in self.CASES:
            with self.subTest(name):
                path = write_config(self.tmp, text, name.replace(" ", "_") + ".conf")
                proc = self.medic("plan", "--config", path, expect=1,
                                  env={"NOMAD_ADDR": self.nomad.address})
                self.assertIn(path + fragment, proc.stderr)
                self.assertIn("expected", proc.stderr)

    def test_missing_policy_file(self):
        path = os.path.join(self.tmp, "nope.conf")
        proc = self.medic("plan", "--config", path, expect=1)
        self.assertIn(path, proc.stderr)

    def test_bad_policy_loses_nothing_journaled(self):
        good = self.policy(mode="dry-run")
        self.medic("once", "--config", good)
        before = self.journal_rows()
        bad = write_config(self.tmp, "controller = { mode = 1; };\n", "bad.conf")
        self.medic("once", "--config", bad, "--db", self.db, expect=1)
        self.assertEqual(self.journal_rows(), before)


if __name__ == "__main__":
    unittest.main()
