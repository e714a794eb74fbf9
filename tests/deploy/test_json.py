"""The JSON twins of the Nomad jobs, checked with jq.

Each file must be the body that POST /v1/jobs accepts ({"Job": {...}} with
the API's PascalCase keys and durations in nanoseconds). The checks below are
written against the JSON alone, independent of test_hcl.py's converter, so a
mistake in the converter cannot hide a wrong key.
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import deploylib as d

# (jq filter that must print true, what it checks)
COMMON_CHECKS = [
    ('.Job | type == "object"', "the body is {\"Job\": {...}}"),
    ('.Job.ID == .Job.Name', "ID and Name agree"),
    ('.Job.Namespace == "default"', "the namespace the ACL policy is attached in"),
    ('.Job.TaskGroups | length == 1', "one task group"),
    ('.Job.TaskGroups[0].Tasks | length == 1', "one task"),
    ('.Job.TaskGroups[0].Tasks[0].Config.command == "/usr/bin/nomad-medic"', "the packaged binary"),
    ('.Job.TaskGroups[0].Tasks[0].Config.args[0] == "run"', "nomad-medic run"),
    ('.Job.TaskGroups[0].Tasks[0].Config.args as $a | ($a | index("--config")) as $i'
     ' | $a[$i + 1] == .Job.TaskGroups[0].Tasks[0].Templates[0].DestPath',
     "--config names the rendered template"),
    ('.Job.TaskGroups[0].Tasks[0].Identity.Env == true', "workload identity in NOMAD_TOKEN"),
    ('.Job.TaskGroups[0].Tasks[0].Services[0].Provider == "nomad"', "native service discovery"),
    ('.Job.TaskGroups[0].Tasks[0].Services[0].Checks[0].Type == "http"', "an HTTP check"),
    ('.Job.TaskGroups[0].Tasks[0].Services[0].Checks[0].Path == "/healthz"', "the liveness probe"),
    ('.Job.TaskGroups[0].Tasks[0].Services[0].PortLabel as $p'
     ' | .Job.TaskGroups[0].Networks[0].DynamicPorts | map(.Label) | index($p) != null',
     "the service port is a port of the group"),
    ('.Job.TaskGroups[0].Tasks[0].Resources.CPU == 100', "100 MHz"),
    ('.Job.TaskGroups[0].RestartPolicy.Mode == "delay"', "restarts wait instead of failing the allocation"),
    ('.Job.TaskGroups[0].RestartPolicy.Delay | type == "number"', "durations are nanoseconds"),
    ('[.. | strings | select(test("^[0-9]+(ns|us|ms|s|m|h)$"))] | length == 0',
     "no duration left as a string"),
]

CLUSTER_CHECKS = [
    ('.Job.ID == "nomad-medic-cluster"', "the job ID"),
    ('.Job.Type == "service"', "a service job"),
    ('.Job.TaskGroups[0].Count == 2', "a holder and a standby"),
    ('[.Job.TaskGroups[0].Constraints[] | select(.Operand == "distinct_hosts")] | length == 1',
     "on different hosts"),
    ('.Job.TaskGroups[0].Tasks[0].Driver == "exec"', "the exec driver"),
    ('.Job.TaskGroups[0].Tasks[0].Config.args | index("--scope") == null', "the default cluster scope"),
    ('.Job.TaskGroups[0].Tasks[0].Env.NOMAD_ADDR == "unix://${NOMAD_SECRETS_DIR}/api.sock"',
     "the Task API socket"),
    ('.Job.TaskGroups[0].Update.AutoRevert == true', "a failed update rolls back"),
    ('.Job.TaskGroups[0].Update.HealthCheck == "checks"', "updates wait for the check"),
    ('.Job.TaskGroups[0].Update.MaxParallel == 1', "one instance at a time"),
    ('.Job.TaskGroups[0].Volumes.journal.Type == "host"', "the journal on a host volume"),
    ('.Job.TaskGroups[0].Volumes.journal.Source == "nomad-medic"', "the client's host volume name"),
    ('.Job.TaskGroups[0].Tasks[0].VolumeMounts[0].Volume == "journal"', "the volume is mounted"),
    ('.Job.TaskGroups[0].Tasks[0].VolumeMounts[0].Destination == "/var/lib/nomad-medic"',
     "at the default journal directory"),
    ('.Job.TaskGroups[0].EphemeralDisk == null', "the ephemeral disk alternative stays commented out"),
    ('.Job.TaskGroups[0].Tasks[0].Resources.MemoryMB == 64', "64 MB"),
]

NODE_CHECKS = [
    ('.Job.ID == "nomad-medic-node"', "the job ID"),
    ('.Job.Type == "system"', "a system job"),
    ('.Job.TaskGroups[0].Count == null', "a system job has no count"),
    ('.Job.TaskGroups[0].Tasks[0].Driver == "raw_exec"', "raw_exec, for root and the host's namespaces"),
    ('.Job.TaskGroups[0].Tasks[0].Config.args as $a | ($a | index("--scope")) as $i | $a[$i + 1] == "node"',
     "--scope node"),
    ('.Job.TaskGroups[0].Tasks[0].Env.NOMAD_ADDR == "http://127.0.0.1:4646"', "the local agent"),
    ('.Job.TaskGroups[0].Volumes == null', "the journal is a host path, no volume"),
    ('.Job.TaskGroups[0].Tasks[0].Templates[0].EmbeddedTmpl | contains("/var/lib/nomad-medic-node/journal.db")',
     "its own journal"),
    ('.Job.TaskGroups[0].Tasks[0].Templates[0].EmbeddedTmpl | contains("servers = [")', "node.servers"),
]


class JsonTwinJqTest(unittest.TestCase):
    def setUp(self):
        if shutil.which("jq") is None:
            self.fail("jq not found; install the jq package (scripts/install-deps.sh does)")

    def jq_true(self, path, expression):
        proc = subprocess.run(["jq", "-e", expression, path], capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and proc.stdout.strip() == "true", proc

    def check_all(self, path, checks):
        for expression, meaning in checks:
            with self.subTest(check=meaning):
                ok, proc = self.jq_true(path, expression)
                self.assertTrue(ok, "%s: %s\n  jq -e '%s' printed %r (exit %d) %s"
                                % (os.path.relpath(path, d.REPO), meaning, expression, proc.stdout.strip(),
                                   proc.returncode, proc.stderr.strip()))

    def test_cluster_job_json(self):
        self.check_all(d.json_twin(d.JOBS["cluster"]), COMMON_CHECKS + CLUSTER_CHECKS)

    def test_node_job_json(self):
        self.check_all(d.json_twin(d.JOBS["node"]), COMMON_CHECKS + NODE_CHECKS)

    def test_checks_fail_on_broken_json(self):
        tmp = tempfile.mkdtemp(prefix="nomad-medic-deploy-")
        try:
            with open(d.json_twin(d.JOBS["cluster"]), encoding="utf-8") as f:
                text = f.read()
            path = os.path.join(tmp, "broken.nomad.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace('"Path": "/healthz"', '"Path": "/readyz"', 1))
            ok, _ = self.jq_true(path, '.Job.TaskGroups[0].Tasks[0].Services[0].Checks[0].Path == "/healthz"')
            self.assertFalse(ok)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text[: len(text) // 2])
            ok, _ = self.jq_true(path, '.Job | type == "object"')
            self.assertFalse(ok)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
