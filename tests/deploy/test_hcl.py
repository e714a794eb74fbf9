"""The HCL deployment files, checked with HashiCorp's own HCL v2 tools.

hclfmt checks syntax and layout of every .hcl file, and hcldec decodes the
Nomad jobs and ACL policies strictly against tests/deploy/*.hcldec. The
decoded values are compared with the binary's defaults (policies/default.conf),
with each other, and with the JSON twins. Each job's configuration template is
rendered with Go's text/template and loaded by the built nomad-medic.

Needs NM_DEPLOY_TOOLS (tests/deploy/build-tools.sh) and NOMAD_MEDIC_BIN.
"""

import difflib
import glob
import json
import os
import posixpath
import re
import shutil
import tempfile
import unittest
from urllib.parse import urlsplit

import deploylib as d


def only(mapping, description):
    """The single value of a one-entry dict (a job's one group, a group's one task)."""
    if len(mapping) != 1:
        raise AssertionError("expected exactly one %s, found %d: %s"
                             % (description, len(mapping), sorted(mapping)))
    return next(iter(mapping.values()))


class Job:
    """One decoded job file with shortcuts to its only group, task and template."""

    def __init__(self, path):
        self.path = path
        self.decoded = d.decode_job(path)
        self.id, self.job = next(iter(self.decoded["job"].items()))
        self.group = only(self.job["group"], "group in %s" % path)
        self.task = only(self.group["task"], "task in %s" % path)
        self.args = self.task["config"].get("args", [])

    def config_template(self):
        """The template block whose destination the --config argument names."""
        if "--config" not in self.args:
            raise AssertionError("%s: the task's args %s have no --config" % (self.path, self.args))
        config_arg = self.args[self.args.index("--config") + 1]
        matches = [t for t in self.task.get("template", []) if t["destination"] == config_arg]
        if len(matches) != 1:
            raise AssertionError("%s: --config %s, but %d template blocks render that destination"
                                 % (self.path, config_arg, len(matches)))
        return matches[0]

    def rendered_config(self):
        return d.render_template(self.config_template()["data"])

    def scope(self):
        """The --scope argument, "cluster" when absent (the binary's default)."""
        return self.args[self.args.index("--scope") + 1] if "--scope" in self.args else "cluster"


class ToolsTestCase(unittest.TestCase):
    def setUp(self):
        try:
            d.tool("hcldec")
            d.tool("hclfmt")
            d.tool("render_template")
        except d.SetupError as e:
            self.fail(str(e))
        self.tmp = tempfile.mkdtemp(prefix="nomad-medic-deploy-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assert_binary_loads(self, config_path, description):
        """Run the binary on config_path; fail with its message when it rejects the file. Return the plan."""
        proc = d.load_config_with_binary(config_path, self.tmp)
        # plan exits 0, 1 (incomplete observation or an error) or 2; anything
        # else, such as a sanitizer's abort, is a crash.
        self.assertIn(proc.returncode, (0, 1, 2), "nomad-medic plan crashed on %s (exit %d):\n%s"
                      % (description, proc.returncode, proc.stderr[-3000:]))
        try:
            plan = json.loads(proc.stdout)
        except ValueError:
            plan = None
        if not isinstance(plan, dict) or "actions" not in plan:
            self.fail("nomad-medic rejected %s (exit %d), or printed no plan:\n%s"
                      % (description, proc.returncode, proc.stderr[-3000:]))
        return plan


class FormattingTest(ToolsTestCase):
    def hcl_files(self):
        files = sorted(glob.glob(os.path.join(d.DEPLOY, "**", "*.hcl"), recursive=True))
        files += sorted(glob.glob(os.path.join(d.HERE, "*.hcldec")))
        return files

    def test_hcl_files_present(self):
        names = [os.path.basename(p) for p in self.hcl_files()]
        for expected in ("nomad-medic-cluster.nomad.hcl", "nomad-medic-node.nomad.hcl",
                         "nomad-medic-cluster.policy.hcl", "nomad-medic-node.policy.hcl"):
            self.assertIn(expected, names)

    def test_hcl_files_parse_and_match_hclfmt(self):
        for path in self.hcl_files():
            with self.subTest(path=os.path.relpath(path, d.REPO)):
                self.assertEqual(d.hclfmt_problems(path), [])

    def test_format_check_reports_misalignment(self):
        path = self.write("misaligned.hcl", 'job "x" {\n  type = "service"\n  priority = 80\n}\n')
        problems = d.hclfmt_problems(path)
        self.assertEqual(len(problems), 1)
        self.assertIn("not in hclfmt's layout", problems[0])

    def test_format_check_reports_syntax_error(self):
        with open(d.JOBS["cluster"], encoding="utf-8") as f:
            broken = f.read().replace('type        = "service"', 'type        = "service', 1)
        path = self.write("broken.nomad.hcl", broken)
        problems = d.hclfmt_problems(path)
        self.assertEqual(len(problems), 1)
        self.assertIn("hclfmt -check", problems[0])


class DecodeGuardTest(ToolsTestCase):
    def test_misspelt_job_block_fails_decode(self):
        with open(d.JOBS["node"], encoding="utf-8") as f:
            broken = f.read().replace("    restart {", "    restrat {", 1)
        path = self.write("broken.nomad.hcl", broken)
        with self.assertRaisesRegex(ValueError, "restrat"):
            d.decode_job(path)

    def test_unknown_runtime_variable_fails_decode(self):
        with open(d.JOBS["cluster"], encoding="utf-8") as f:
            broken = f.read().replace("${NOMAD_SECRETS_DIR}", "${NOMAD_SECRET_DIR}", 1)
        path = self.write("broken.nomad.hcl", broken)
        with self.assertRaisesRegex(ValueError, "NOMAD_SECRET_DIR"):
            d.decode_job(path)

    def test_misspelt_acl_block_fails_decode(self):
        with open(d.ACL_POLICIES["cluster"], encoding="utf-8") as f:
            broken = f.read().replace("operator {", "operater {", 1)
        path = self.write("broken.policy.hcl", broken)
        with self.assertRaisesRegex(ValueError, "operater"):
            d.decode_acl(path)

    def test_binary_rejects_unknown_setting(self):
        path = self.write("unknown.conf", 'listener = { adress = "127.0.0.1:8646"; };\n')
        proc = d.load_config_with_binary(path, self.tmp)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("adress", proc.stderr)

    def test_renderer_rejects_unknown_env_name(self):
        with self.assertRaisesRegex(ValueError, "NOMAD_ADDR_htp"):
            d.render_template('address = "{{ env "NOMAD_ADDR_htp" }}";\n')


class ClusterJobTest(ToolsTestCase):
    def setUp(self):
        super().setUp()
        self.job = Job(d.JOBS["cluster"])
        self.defaults = d.defaults()
        self.config_text = self.job.rendered_config()
        self.config = d.parse_libconfig(self.config_text)

    def test_job_is_service(self):
        self.assertEqual(self.job.job["type"], "service")

    def test_job_id_matches_file_name(self):
        self.assertEqual(self.job.id + ".nomad.hcl", os.path.basename(self.job.path))

    def test_two_instances_on_distinct_hosts(self):
        self.assertEqual(self.job.group["count"], 2)
        operators = [c["operator"] for c in self.job.group.get("constraint", [])]
        self.assertIn("distinct_hosts", operators)

    def test_exec_driver_runs_binary(self):
        self.assertEqual(self.job.task["driver"], "exec")
        self.assertEqual(self.job.task["config"]["command"], "/usr/bin/nomad-medic")

    def test_args_run_cluster_scope(self):
        self.assertEqual(self.job.args[0], "run")
        self.assertEqual(self.job.scope(), "cluster")

    def test_config_arg_names_rendered_template(self):
        template = self.job.config_template()
        self.assertEqual(self.job.args[self.job.args.index("--config") + 1], template["destination"])

    def test_workload_identity_in_env(self):
        self.assertIs(self.job.task["identity"]["env"], True)

    def test_nomad_addr_is_task_api_socket(self):
        self.assertEqual(self.job.task["env"]["NOMAD_ADDR"], "unix://${NOMAD_SECRETS_DIR}/api.sock")

    def test_resources(self):
        self.assertEqual(self.job.task["resources"], {"cpu": 100, "memory": 64})

    def test_restart_policy_delays(self):
        restart = self.job.group["restart"]
        self.assertEqual(restart["mode"], "delay")
        self.assertGreater(restart["attempts"], 0)
        # Nomad rejects a policy whose attempts do not fit into the interval.
        self.assertGreaterEqual(d.go_duration_ns(restart["interval"]),
                                restart["attempts"] * d.go_duration_ns(restart["delay"]))

    def test_update_waits_for_checks_and_reverts(self):
        update = self.job.group["update"]
        self.assertEqual(update["max_parallel"], 1)
        self.assertEqual(update["health_check"], "checks")
        self.assertIs(update["auto_revert"], True)
        self.assertLess(d.go_duration_ns(update["min_healthy_time"]), d.go_duration_ns(update["healthy_deadline"]))
        self.assertLess(d.go_duration_ns(update["healthy_deadline"]), d.go_duration_ns(update["progress_deadline"]))

    def test_service_check_is_healthz_on_listener_port(self):
        self.assertEqual(len(self.job.task["service"]), 1)
        service = self.job.task["service"][0]
        self.assertEqual(service["provider"], "nomad")
        self.assertEqual(len(self.job.group["network"]), 1)
        self.assertIn(service["port"], self.job.group["network"][0]["port"])
        self.assertEqual(len(service["check"]), 1)
        check = service["check"][0]
        self.assertEqual(check["type"], "http")
        self.assertEqual(check["path"], "/healthz")

    def test_listener_binds_allocation_port(self):
        service = self.job.task["service"][0]
        self.assertIs(self.config["listener"]["enabled"], True)
        self.assertEqual(self.config["listener"]["address"], d.TEMPLATE_ENV["NOMAD_ADDR_" + service["port"]])

    def test_journal_on_host_volume(self):
        self.assertEqual(len(self.job.group["volume"]), 1)
        volume_name, volume = next(iter(self.job.group["volume"].items()))
        self.assertEqual(volume["type"], "host")
        self.assertEqual(volume["source"], "nomad-medic")
        self.assertEqual(len(self.job.task["volume_mount"]), 1)
        mount = self.job.task["volume_mount"][0]
        self.assertEqual(mount["volume"], volume_name)
        self.assertEqual(posixpath.dirname(self.config["journal"]["path"]), mount["destination"])
        self.assertEqual(posixpath.dirname(self.config["controller"]["pause_file"]), mount["destination"])

    def test_journal_path_is_binary_default(self):
        self.assertEqual(self.config["journal"]["path"], self.defaults["journal"]["path"])

    def test_coordination_matches_defaults(self):
        for name in ("namespace", "prefix"):
            with self.subTest(setting=name):
                self.assertEqual(self.config["coordination"][name], self.defaults["coordination"][name])

    def test_lock_path_is_nomad_medic_lock(self):
        coordination = self.config["coordination"]
        self.assertEqual(coordination["prefix"] + "/lock", "nomad-medic/lock")
        self.assertEqual(coordination["namespace"], "default")

    def test_management_only_rules_disabled(self):
        self.assertIs(self.config["rules"]["system_gc"]["enabled"], False)

    def test_rendered_config_loads_in_binary(self):
        path = self.write("cluster.conf", self.config_text)
        plan = self.assert_binary_loads(path, "the cluster job's rendered configuration")
        self.assertEqual(plan["mode"], "dry-run")
        enabled = {r["rule"]: r["enabled"] for r in plan["rules"]}
        self.assertIs(enabled["system_gc"], False)

    def test_rendered_config_loads_in_enforce_mode(self):
        text, count = re.subn(r'mode = "dry-run";', 'mode = "enforce";', self.config_text)
        self.assertEqual(count, 1, "the cluster job's template should set controller.mode once")
        path = self.write("cluster-enforce.conf", text)
        plan = self.assert_binary_loads(path, "the cluster job's configuration switched to enforce")
        self.assertEqual(plan["mode"], "enforce")


class NodeJobTest(ToolsTestCase):
    def setUp(self):
        super().setUp()
        self.job = Job(d.JOBS["node"])
        self.cluster = Job(d.JOBS["cluster"])
        self.defaults = d.defaults()
        self.config_text = self.job.rendered_config()
        self.config = d.parse_libconfig(self.config_text)

    def test_job_is_system(self):
        self.assertEqual(self.job.job["type"], "system")
        self.assertNotIn("count", self.job.group)

    def test_job_id_matches_file_name(self):
        self.assertEqual(self.job.id + ".nomad.hcl", os.path.basename(self.job.path))

    def test_raw_exec_runs_binary(self):
        self.assertEqual(self.job.task["driver"], "raw_exec")
        self.assertEqual(self.job.task["config"]["command"], "/usr/bin/nomad-medic")

    def test_args_run_node_scope(self):
        self.assertEqual(self.job.args[0], "run")
        self.assertEqual(self.job.scope(), "node")
        self.assertIn("--scope node", " ".join(self.job.args))

    def test_config_arg_names_rendered_template(self):
        template = self.job.config_template()
        self.assertEqual(self.job.args[self.job.args.index("--config") + 1], template["destination"])

    def test_workload_identity_in_env(self):
        self.assertIs(self.job.task["identity"]["env"], True)

    def test_nomad_addr_is_local_agent_default(self):
        self.assertEqual(self.job.task["env"]["NOMAD_ADDR"], d.documented_default_address())

    def test_journal_on_host_path_apart_from_cluster(self):
        journal = self.config["journal"]["path"]
        self.assertTrue(journal.startswith("/var/lib/nomad-medic-node/"), journal)
        self.assertNotEqual(posixpath.dirname(journal), posixpath.dirname(self.defaults["journal"]["path"]))
        self.assertEqual(posixpath.dirname(self.config["controller"]["pause_file"]), posixpath.dirname(journal))

    def test_servers_are_http_urls(self):
        servers = self.config["node"]["servers"]
        self.assertGreaterEqual(len(servers), 1)
        for server in servers:
            with self.subTest(server=server):
                url = urlsplit(server)
                self.assertIn(url.scheme, ("http", "https"))
                self.assertTrue(url.hostname)
                self.assertTrue(url.port)

    def test_coordination_matches_cluster_job(self):
        cluster = d.parse_libconfig(self.cluster.rendered_config())
        self.assertEqual(self.config["coordination"], cluster["coordination"])

    def test_listener_binds_allocation_port(self):
        service = self.job.task["service"][0]
        self.assertIn(service["port"], self.job.group["network"][0]["port"])
        self.assertEqual(self.config["listener"]["address"], d.TEMPLATE_ENV["NOMAD_ADDR_" + service["port"]])

    def test_service_check_is_healthz(self):
        check = self.job.task["service"][0]["check"][0]
        self.assertEqual(check["type"], "http")
        self.assertEqual(check["path"], "/healthz")

    def test_rendered_config_loads_in_binary(self):
        path = self.write("node.conf", self.config_text)
        plan = self.assert_binary_loads(path, "the node job's rendered configuration")
        self.assertEqual(plan["mode"], "dry-run")

    def test_rendered_config_loads_in_enforce_mode(self):
        text, count = re.subn(r'mode = "dry-run";', 'mode = "enforce";', self.config_text)
        self.assertEqual(count, 1, "the node job's template should set controller.mode once")
        path = self.write("node-enforce.conf", text)
        plan = self.assert_binary_loads(path, "the node job's configuration switched to enforce")
        self.assertEqual(plan["mode"], "enforce")


class ExampleConfigTest(ToolsTestCase):
    # Settings where the complete example departs from the built-in defaults on purpose.
    INTENDED_DIFFERENCES = {
        "listener.enabled": True,               # monitoring reads /healthz and /metrics
        "rules.server_restart.enabled": False,  # needs a command that reaches the servers
    }

    def setUp(self):
        super().setUp()
        self.defaults = d.defaults()
        self.cluster = d.read_libconfig(d.EXAMPLE_CONFIGS["cluster"])
        self.node = d.read_libconfig(d.EXAMPLE_CONFIGS["node"])

    @staticmethod
    def value(config, dotted):
        for part in dotted.split("."):
            config = config[part]
        return config

    def test_examples_load_in_binary(self):
        for scope, path in d.EXAMPLE_CONFIGS.items():
            with self.subTest(example=os.path.basename(path)):
                plan = self.assert_binary_loads(path, path)
                self.assertEqual(plan["mode"], "dry-run")

    def test_examples_load_in_enforce_mode(self):
        for scope, path in d.EXAMPLE_CONFIGS.items():
            with self.subTest(example=os.path.basename(path)):
                with open(path, encoding="utf-8") as f:
                    text, count = re.subn(r'mode = "dry-run";', 'mode = "enforce";', f.read())
                self.assertEqual(count, 1, "%s should set controller.mode once" % path)
                plan = self.assert_binary_loads(self.write(scope + "-enforce.conf", text), path + " in enforce mode")
                self.assertEqual(plan["mode"], "enforce")

    def test_cluster_example_sets_every_default(self):
        example = set(d.setting_paths(self.cluster))
        for name in d.setting_paths(self.defaults):
            with self.subTest(setting=name):
                self.assertIn(name, example)

    def test_cluster_example_values_are_defaults(self):
        for name in d.setting_paths(self.defaults):
            with self.subTest(setting=name):
                expected = self.INTENDED_DIFFERENCES.get(name, self.value(self.defaults, name))
                self.assertEqual(self.value(self.cluster, name), expected)

    def test_node_example_keeps_own_state_directory(self):
        journal = self.node["journal"]["path"]
        self.assertTrue(journal.startswith("/var/lib/nomad-medic-node/"), journal)
        self.assertEqual(posixpath.dirname(self.node["controller"]["pause_file"]), posixpath.dirname(journal))

    def test_node_example_listens_beside_cluster(self):
        cluster_port = urlsplit("//" + self.cluster["listener"]["address"]).port
        node_port = urlsplit("//" + self.node["listener"]["address"]).port
        self.assertEqual(self.cluster["listener"]["address"], self.defaults["listener"]["address"])
        self.assertNotEqual(node_port, cluster_port)

    def test_node_example_coordination_is_default(self):
        for name, value in self.node["coordination"].items():
            with self.subTest(setting=name):
                self.assertEqual(value, self.defaults["coordination"][name])

    def test_node_example_lists_servers(self):
        self.assertGreaterEqual(len(self.node["node"]["servers"]), 1)


class JsonTwinTest(ToolsTestCase):
    def test_json_twins_match_hcl(self):
        for scope, path in d.JOBS.items():
            with self.subTest(job=os.path.basename(path)):
                expected = d.job_to_api(d.decode_job(path))
                with open(d.json_twin(path), encoding="utf-8") as f:
                    actual = json.load(f)
                if actual != expected:
                    self.fail("%s differs from %s; change both, or regenerate the JSON with "
                              "`NM_DEPLOY_TOOLS=DIR python3 tests/deploy/deploylib.py --write-json`:\n%s"
                              % (d.json_twin(path), path,
                                 "".join(difflib.unified_diff(
                                     d.dump_json(expected).splitlines(True), d.dump_json(actual).splitlines(True),
                                     "from the HCL", "the JSON file"))))

    def test_converter_rejects_unmapped_key(self):
        decoded = d.decode_job(d.JOBS["cluster"])
        group = next(iter(next(iter(decoded["job"].values()))["group"].values()))
        group["shutdown_delay"] = "5s"
        with self.assertRaisesRegex(ValueError, "shutdown_delay"):
            d.job_to_api(decoded)


class AclPolicyTest(ToolsTestCase):
    """What each policy grants, judged the way Nomad resolves namespace and variable rules."""

    OTHER_NAMESPACE = "some-team"

    def setUp(self):
        super().setUp()
        self.cluster = d.decode_acl(d.ACL_POLICIES["cluster"])
        self.node = d.decode_acl(d.ACL_POLICIES["node"])
        coordination = d.defaults()["coordination"]
        self.ns = coordination["namespace"]
        self.prefix = coordination["prefix"]
        self.node_id = "9a89adb1-e086-1040-1b8d-11c75d9246fc"

    def var(self, policy, path):
        return d.variable_capabilities(policy, self.ns, path)

    def test_cluster_reads_and_deletes_services_everywhere(self):
        for namespace in (self.ns, self.OTHER_NAMESPACE):
            with self.subTest(namespace=namespace):
                caps = d.namespace_capabilities(self.cluster, namespace)
                self.assertIn("read-job", caps)
                # DELETE /v1/service/<name>/<id> on Nomad 1.x.
                self.assertIn("submit-job", caps)

    def test_cluster_namespace_grants_nothing_else(self):
        for namespace in (self.ns, self.OTHER_NAMESPACE):
            with self.subTest(namespace=namespace):
                self.assertEqual(d.namespace_capabilities(self.cluster, namespace), {"read-job", "submit-job"})

    def test_cluster_holds_lock(self):
        self.assertIn("write", self.var(self.cluster, self.prefix + "/lock"))

    def test_cluster_reads_heartbeats(self):
        self.assertIn("read", self.var(self.cluster, "%s/heartbeat/%s" % (self.prefix, self.node_id)))

    def test_cluster_manages_restart_orders(self):
        caps = self.var(self.cluster, "%s/restart/%s" % (self.prefix, self.node_id))
        self.assertTrue({"list", "read", "write"} <= caps, caps)

    def test_cluster_never_destroys_variables(self):
        self.assertNotIn("destroy", self.var(self.cluster, self.prefix + "/lock"))

    def test_cluster_variables_only_under_prefix(self):
        self.assertEqual(self.var(self.cluster, "nomad/jobs/other"), set())
        self.assertEqual(self.var(self.cluster, "other-app/lock"), set())

    def test_cluster_node_operator_agent(self):
        self.assertEqual(self.cluster["node"]["policy"], "write")
        self.assertEqual(self.cluster["operator"]["policy"], "read")
        self.assertEqual(self.cluster["agent"]["policy"], "read")

    def test_cluster_grants_no_other_rules(self):
        granted = sorted(k for k, v in self.cluster.items() if v)
        self.assertEqual(granted, ["agent", "namespace", "node", "operator"])

    def test_node_reads_allocations_everywhere(self):
        for namespace in (self.ns, self.OTHER_NAMESPACE):
            with self.subTest(namespace=namespace):
                self.assertEqual(d.namespace_capabilities(self.node, namespace), {"read-job"})

    def test_node_writes_heartbeat(self):
        self.assertEqual(self.var(self.node, "%s/heartbeat/%s" % (self.prefix, self.node_id)), {"write"})

    def test_node_reads_and_answers_orders(self):
        self.assertEqual(self.var(self.node, "%s/restart/%s" % (self.prefix, self.node_id)), {"read", "write"})

    def test_node_cannot_take_lock(self):
        self.assertEqual(self.var(self.node, self.prefix + "/lock"), set())

    def test_node_reads_node_and_agent(self):
        self.assertEqual(self.node["node"]["policy"], "read")
        self.assertEqual(self.node["agent"]["policy"], "read")

    def test_node_grants_no_other_rules(self):
        granted = sorted(k for k, v in self.node.items() if v)
        self.assertEqual(granted, ["agent", "namespace", "node"])

    def test_jobs_attach_to_policy_namespace(self):
        for scope in ("cluster", "node"):
            with self.subTest(scope=scope):
                job = Job(d.JOBS[scope])
                self.assertEqual(job.job["namespace"], self.ns)


if __name__ == "__main__":
    unittest.main()
