"""The ACL policies against the requests the binary really sends.

nomad-medic runs against the project's test Nomad API server on loopback
(tests/fake_nomad/fake_nomad.py) through scenarios that make every rule act:
orphaned registrations, a GC pile-up, a hung client, a flapping node, and the
node scope's heartbeat and order loop. The server records every request.
Each request is mapped to the ACL capability Nomad checks for it (the table
in deploy/README.md), and the policy of the request's scope must grant it.
A request that the table does not know fails the test, so a new endpoint in
the binary cannot go unnoticed by the policies.

Needs NOMAD_MEDIC_BIN and NM_DEPLOY_TOOLS (hcldec decodes the policies).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from urllib.parse import parse_qs, unquote

import deploylib as d

sys.path.insert(0, os.path.join(d.REPO, "tests", "integration"))

from harness import FakeNomad, scenarios  # noqa: E402  (path set above)

# Requests that no ACL policy can allow, because Nomad requires a management
# token for them. The policies leave them out on purpose.
MANAGEMENT_ONLY = {("PUT", "/v1/system/gc")}

RUN_SECONDS = 4


def required_grant(method, path, query):
    """The capability Nomad checks for one request, as (kind, detail), or None when it needs no ACL.

    kind is "node", "agent", "operator" (detail: "read" or "write"),
    "namespace" (detail: (namespace, capability)), "variable" (detail:
    (namespace, path, capability)) or "management". Raises LookupError for an
    endpoint the table does not know.
    """
    params = parse_qs(query, keep_blank_values=True)
    namespace = params.get("namespace", ["default"])[0]

    if method == "GET" and path in ("/v1/status/leader", "/v1/status/peers", "/v1/agent/health"):
        return None
    if method == "GET" and (path == "/v1/nodes" or re.fullmatch(r"/v1/node/[^/]+", path)):
        return ("node", "read")
    if method == "GET" and re.fullmatch(r"/v1/node/[^/]+/allocations", path):
        # Also read-job in the namespaces of the returned allocations, checked separately.
        return ("node", "read")
    if method in ("PUT", "POST") and re.fullmatch(r"/v1/node/[^/]+/eligibility", path):
        return ("node", "write")
    if method == "GET" and path == "/v1/agent/members":
        return ("node", "read")
    if method == "GET" and path == "/v1/agent/self":
        return ("agent", "read")
    if method == "GET" and path == "/v1/operator/autopilot/health":
        return ("operator", "read")
    if method == "GET" and (path in ("/v1/allocations", "/v1/evaluations", "/v1/services")
                            or re.fullmatch(r"/v1/(allocation|service)/[^/]+", path)):
        return ("namespace", (namespace, "read-job"))
    if method == "DELETE" and re.fullmatch(r"/v1/service/[^/]+/[^/]+", path):
        return ("namespace", (namespace, "submit-job"))
    if method == "PUT" and path == "/v1/system/gc":
        return ("management", None)
    if method == "GET" and path == "/v1/vars":
        # Listing with a prefix needs list on the paths below it.
        return ("variable", (namespace, params.get("prefix", [""])[0] + "x", "list"))
    m = re.fullmatch(r"/v1/var/(.+)", path)
    if m:
        var_path = unquote(m.group(1))
        capability = {"GET": "read", "PUT": "write", "POST": "write", "DELETE": "destroy"}.get(method)
        if capability is not None:
            return ("variable", (namespace, var_path, capability))
    raise LookupError("%s %s%s has no entry in required_grant(); add the capability Nomad checks for it "
                      "(and a row to the table in deploy/README.md)" % (method, path, "?" + query if query else ""))


def grants(policy, grant):
    """Whether the decoded ACL policy allows grant, with Nomad's rule resolution."""
    kind, detail = grant
    if kind in ("node", "agent", "operator"):
        level = policy.get(kind, {}).get("policy")
        return level == "write" or level == detail
    if kind == "namespace":
        namespace, capability = detail
        # "*" lists every namespace the token may read, so check "default" and one more.
        namespaces = ["default", "some-team"] if namespace == "*" else [namespace]
        return all(capability in d.namespace_capabilities(policy, ns) for ns in namespaces)
    if kind == "variable":
        namespace, var_path, capability = detail
        return capability in d.variable_capabilities(policy, namespace, var_path)
    return False


class Recorder:
    """A test Nomad API server for one scenario, and the requests nomad-medic sent to it."""

    def __init__(self, test, scenario):
        self.test = test
        self.nomad = FakeNomad()
        self.nomad.start()
        test.addCleanup(self.nomad.stop)
        self.nomad.load(scenario)

    def requests(self):
        return [(r["method"], r["path"], r.get("query", "") or "") for r in self.nomad.requests()]


class AclCoverageTest(unittest.TestCase):
    def setUp(self):
        try:
            self.binary = d.medic_binary()
            self.policies = {scope: d.decode_acl(path) for scope, path in d.ACL_POLICIES.items()}
        except d.SetupError as e:
            self.fail(str(e))
        self.tmp = tempfile.mkdtemp(prefix="nomad-medic-acl-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def config(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def medic(self, args, timeout=60):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        proc = subprocess.run([self.binary] + args, env=env, capture_output=True, text=True, timeout=timeout)
        self.assertIn(proc.returncode, (0, 1, 2), "nomad-medic %s crashed (exit %d):\n%s"
                      % (" ".join(args), proc.returncode, proc.stderr[-3000:]))
        return proc

    def run_for(self, args, seconds):
        """Run nomad-medic `run` for seconds, then stop it with SIGTERM by its pid."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        proc = subprocess.Popen([self.binary] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail("nomad-medic %s did not stop within 60s of SIGTERM:\n%s" % (" ".join(args), err[-3000:]))
        self.assertEqual(proc.returncode, 0, "nomad-medic %s exited %d:\n%s"
                         % (" ".join(args), proc.returncode, err[-3000:]))
        return out, err

    def cluster_config(self, address, db_name):
        return self.config(db_name + ".conf", "\n".join([
            'nomad = { address = "%s"; };' % address,
            'journal = { path = "%s"; };' % os.path.join(self.tmp, db_name + ".db"),
            'controller = { mode = "enforce"; interval = "1s"; pause_file = "%s"; };'
            % os.path.join(self.tmp, "pause"),
            "rules = {",
            '  orphan_services = { grace = "0s"; cooldown = "0s"; rate_limit = "0"; };',
            '  system_gc = { min_terminal_allocs = 1; min_terminal_evals = 1; cooldown = "0s"; rate_limit = "0"; };',
            '  client_restart = { min_down = "0s"; settle = "0s"; cooldown = "0s"; rate_limit = "0"; };',
            '  node_ineligible = { flap_limit = 2; cooldown = "0s"; rate_limit = "0"; };',
            "};",
            'coordination = { lock_ttl = "10s"; lock_delay = "0s"; };',
            "",
        ]))

    def assert_covered(self, scope, requests, allowed_uncovered=frozenset()):
        self.assertGreater(len(requests), 0, "nomad-medic sent no request")
        policy = self.policies[scope]
        for method, path, query in sorted(set(requests)):
            with self.subTest(scope=scope, request="%s %s?%s" % (method, path, query)):
                grant = required_grant(method, path, query)
                if grant is None:
                    continue
                if (method, path) in allowed_uncovered:
                    self.assertFalse(grants(policy, grant))
                    continue
                self.assertTrue(grants(policy, grant), "%s policy does not grant %s for %s %s?%s"
                                % (scope, grant, method, path, query))

    def test_cluster_scope_requests_are_granted(self):
        requests = []
        for name, scenario in (("orphans", scenarios.two_namespaces()), ("gc", scenarios.gc_pileup()),
                               ("hung", scenarios.hung_client())):
            recorder = Recorder(self, scenario)
            self.medic(["once", "--config", self.cluster_config(recorder.nomad.address, name)])
            self.run_for(["run", "--config", self.cluster_config(recorder.nomad.address, name + "-run")],
                         RUN_SECONDS)
            requests += recorder.requests()

        recorder = Recorder(self, scenarios.flapping(cycles=2))
        config = self.cluster_config(recorder.nomad.address, "flapping")
        for _ in range(5):
            self.medic(["once", "--config", config])
            recorder.nomad.tick()
        requests += recorder.requests()

        seen = {(m, p) for m, p, _ in requests}
        # Each rule's action was reached, so the check covers the writes too.
        self.assertTrue(any(m == "DELETE" and p.startswith("/v1/service/") for m, p in seen), sorted(seen))
        self.assertIn(("PUT", "/v1/system/gc"), seen)
        self.assertTrue(any(p.endswith("/lock") for m, p in seen if m == "PUT"), sorted(seen))
        self.assert_covered("cluster", requests, MANAGEMENT_ONLY)

    def test_node_scope_requests_are_granted(self):
        node_id = "5b1c7e52-3f0a-4d8e-9c21-7a6f0e4b9d13"
        recorder = Recorder(self, {"nodes": [{"ID": node_id, "Name": "client-1", "Status": "ready"}],
                                   "allocations": [],
                                   "agent_self": {"stats": {"client": {"node_id": node_id}}}})
        # Empty host directories and stub programs, so the node scope inventories
        # nothing of this machine and changes nothing on it.
        host = os.path.join(self.tmp, "host")
        for sub in ("netns", "cni-cache", "ipam", "ipam-legacy", "cni-bin"):
            os.makedirs(os.path.join(host, sub))
        stub = os.path.join(host, "empty-output")
        with open(stub, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(stub, 0o755)
        config = self.config("node.conf", "\n".join([
            'nomad = { address = "%s"; };' % recorder.nomad.address,
            'journal = { path = "%s"; };' % os.path.join(self.tmp, "node.db"),
            'controller = { mode = "enforce"; interval = "1s"; pause_file = "%s"; };'
            % os.path.join(self.tmp, "pause"),
            "node = {",
            '  netns_dir = "%s";' % os.path.join(host, "netns"),
            '  cni_cache_dir = "%s";' % os.path.join(host, "cni-cache"),
            '  ipam_dir = "%s";' % os.path.join(host, "ipam"),
            '  ipam_dir_legacy = "%s";' % os.path.join(host, "ipam-legacy"),
            '  cni_path = "%s";' % os.path.join(host, "cni-bin"),
            '  iptables = "%s"; iptables_save = "%s"; ip = "%s";' % (stub, stub, stub),
            '  servers = ["%s"];' % recorder.nomad.address,
            '  restart_command = ["%s"];' % stub,
            "};",
            'coordination = { heartbeat_interval = "1s"; };',
            "",
        ]))
        self.run_for(["run", "--scope", "node", "--config", config], RUN_SECONDS)
        requests = recorder.requests()

        seen = {(m, p) for m, p, _ in requests}
        self.assertIn(("PUT", "/v1/var/nomad-medic/heartbeat/" + node_id), seen)
        self.assertIn(("GET", "/v1/node/%s/allocations" % node_id), seen)
        self.assert_covered("node", requests)

    def test_unknown_endpoint_is_reported(self):
        with self.assertRaisesRegex(LookupError, "/v1/acl/tokens"):
            required_grant("GET", "/v1/acl/tokens", "")

    def test_missing_grant_is_reported(self):
        grant = required_grant("DELETE", "/v1/service/web/_nomad-task-x", "namespace=default")
        self.assertFalse(grants(self.policies["node"], grant))
        self.assertTrue(grants(self.policies["cluster"], grant))


if __name__ == "__main__":
    unittest.main()
