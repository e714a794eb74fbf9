"""nomad-medic doctor: each check on the scenario built to trigger it, a healthy cluster,
the JSON shape, exit codes, failed reads, and the heartbeat settings it reads."""

import json
import os
import unittest

from medic import MedicTestCase, scenarios, write_config

# Every check the doctor runs, in its order.
CHECKS = [
    "colocated_server_client", "client_reserved_missing", "servers_too_few", "servers_even",
    "raft_missing_server", "autopilot_unhealthy", "group_stops_on_disconnect",
    "deprecated_disconnect_fields", "nomad_version_bug", "nomad_version_unknown",
    "disconnect_window_short",
]

# (label, scenario builder, text that the finding's fix must contain)
CHECK_CASES = [
    ("colocated", scenarios.doctor_colocated, "host without a Nomad server"),
    ("no reserved", scenarios.doctor_no_reserved, "reserved {"),
    ("no reserved, oversubscribed", lambda: scenarios.doctor_no_reserved(oversubscription=True),
     "reserved {"),
    ("one server", lambda: scenarios.doctor_servers(1), "Run three servers"),
    ("two servers", lambda: scenarios.doctor_servers(2), "Run three servers"),
    ("four servers", lambda: scenarios.doctor_servers(4), "Run 3 or 5 servers"),
    ("raft missing", scenarios.doctor_raft_missing, "nomad operator raft remove-peer"),
    ("autopilot unhealthy", scenarios.doctor_autopilot_unhealthy, "reaches the leader on the RPC port"),
    ("stop on client", scenarios.doctor_stop_on_client, 'lost_after = "1h"'),
    ("deprecated fields", scenarios.doctor_deprecated_fields, 'lost_after = "1h"'),
    ("old clients", lambda: scenarios.doctor_versions(client_version="1.7.5"),
     "Upgrade the clients to 1.7.16 or later"),
    ("unknown version", scenarios.doctor_unknown_version, "nomad version"),
    ("short window", scenarios.doctor_short_window, 'lost_after = "1m"'),
    ("short window at scale",
     lambda: scenarios.doctor_short_window(lost_after_s=120, max_heartbeats_per_second=0.1),
     'lost_after = "3m"'),
]


class DoctorTestCase(MedicTestCase):
    scenario = staticmethod(scenarios.doctor_healthy)

    def doctor(self, *args, expect=0):
        return self.medic("doctor", *args, env={"NOMAD_ADDR": self.nomad.address}, expect=expect)

    def doctor_json(self, *args, expect=0):
        return json.loads(self.doctor("--json", *args, expect=expect).stdout)

    def load(self, scenario):
        self.data = scenario
        self.nomad.load(scenario)


class HealthyCluster(DoctorTestCase):
    def test_text_says_nothing_found(self):
        proc = self.doctor()
        self.assertIn("No findings: all 11 checks ran", proc.stdout)
        self.assertNotIn("SEVERITY", proc.stdout)

    def test_json_has_no_findings(self):
        report = self.doctor_json()
        self.assertEqual(report["findings"], [])
        self.assertEqual(report["failed_reads"], [])
        self.assertIs(report["complete"], True)
        self.assertEqual(report["summary"], {"findings": 0, "critical": 0, "warning": 0, "info": 0})

    def test_every_check_ran_completely(self):
        checks = self.doctor_json()["checks"]
        self.assertEqual([c["check"] for c in checks], CHECKS)
        for check in checks:
            with self.subTest(check=check["check"]):
                self.assertIs(check["ran"], True)
                self.assertIs(check["complete"], True)
                self.assertEqual(check["findings"], 0)
                self.assertNotIn("note", check)

    def test_detailed_exitcode_zero(self):
        self.doctor("--detailed-exitcode", expect=0)

    def test_cluster_counts(self):
        self.assertEqual(self.doctor_json()["cluster"],
                         {"servers": 3, "clients": 4, "jobs": 3, "task_groups": 3})

    def test_sends_only_gets(self):
        self.doctor()
        self.assertEqual(self.nomad.writes(), [])

    def test_reads_every_source(self):
        self.doctor()
        paths = {r["path"] for r in self.nomad.requests()}
        for path in ("/v1/agent/members", "/v1/agent/self", "/v1/nodes",
                     "/v1/operator/scheduler/configuration", "/v1/operator/raft/configuration",
                     "/v1/operator/autopilot/health", "/v1/jobs", "/v1/job/web",
                     "/v1/job/billing", "/v1/job/nightly-export"):
            with self.subTest(path=path):
                self.assertIn(path, paths)

    def test_lists_with_resources_and_all_namespaces(self):
        self.doctor()
        requests = self.nomad.requests()
        nodes = [r for r in requests if r["path"] == "/v1/nodes"][0]
        jobs = [r for r in requests if r["path"] == "/v1/jobs"][0]
        billing = [r for r in requests if r["path"] == "/v1/job/billing"][0]
        self.assertEqual(nodes["params"].get("resources"), "true")
        self.assertEqual(jobs["params"].get("namespace"), "*")
        self.assertEqual(billing["params"].get("namespace"), "prod")

    def test_no_node_reads_when_stubs_carry_resources(self):
        self.doctor()
        self.assertEqual([r for r in self.nomad.requests() if r["path"].startswith("/v1/node/")], [])

    def test_heartbeat_settings_from_agent(self):
        heartbeat = self.doctor_json()["heartbeat"]
        self.assertEqual(heartbeat["heartbeat_grace_s"], 10)
        self.assertEqual(heartbeat["min_heartbeat_ttl_s"], 10)
        self.assertEqual(heartbeat["max_heartbeats_per_second"], 50)
        self.assertEqual(heartbeat["defaults_assumed"], [])
        self.assertNotIn("defaults_assumed_because", heartbeat)

    def test_heartbeat_window_arithmetic(self):
        heartbeat = self.doctor_json()["heartbeat"]
        self.assertEqual(heartbeat["live_nodes"], 4)
        self.assertEqual(heartbeat["ttl_min_s"], 10)
        self.assertEqual(heartbeat["ttl_max_s"], 20)
        self.assertEqual(heartbeat["down_after_max_s"], 30)
        self.assertEqual(heartbeat["required_window_s"], 50)

    def test_help(self):
        proc = self.medic("doctor", "--help")
        self.assertIn("Usage: nomad-medic doctor", proc.stdout)
        for check in CHECKS:
            with self.subTest(check=check):
                self.assertIn(check, proc.stdout)

    def test_overview_lists_doctor(self):
        self.assertIn("doctor", self.medic("--help").stdout)

    def test_extra_argument_rejected(self):
        proc = self.doctor("now", expect=1)
        self.assertIn('doctor takes no arguments, got "now"', proc.stderr)

    def test_from_capture_rejected(self):
        proc = self.doctor("--from-capture", self.tmp, expect=1)
        self.assertIn("reads the live cluster only", proc.stderr)

    def test_node_scope_rejected(self):
        proc = self.doctor("--scope", "node", expect=1)
        self.assertIn("doctor has no node scope", proc.stderr)

    def test_unreachable_nomad_is_an_error(self):
        address = self.nomad.address
        self.nomad.stop()
        proc = self.medic("doctor", env={"NOMAD_ADDR": address}, expect=1)
        self.assertIn("read", proc.stderr)
        self.assertNotIn("No findings", proc.stdout)


class EachCheck(DoctorTestCase):
    """Every check is reported on the scenario built for it, and nothing else is."""

    def run_case(self, builder):
        scenario = builder()
        self.load(scenario)
        return scenario, self.doctor_json("--detailed-exitcode", expect=2)

    def test_reported_check_ids(self):
        for label, builder, _ in CHECK_CASES:
            with self.subTest(case=label):
                scenario, report = self.run_case(builder)
                expected = scenarios.expected(scenario)["doctor"]
                self.assertEqual({f["check"] for f in report["findings"]}, set(expected))

    def test_reported_severity(self):
        for label, builder, _ in CHECK_CASES:
            with self.subTest(case=label):
                scenario, report = self.run_case(builder)
                expected = scenarios.expected(scenario)["doctor"]
                for finding in report["findings"]:
                    self.assertEqual(finding["severity"], expected[finding["check"]])

    def test_fix_named(self):
        for label, builder, fix in CHECK_CASES:
            with self.subTest(case=label):
                _, report = self.run_case(builder)
                self.assertTrue(report["findings"])
                self.assertIn(fix, report["findings"][0]["fix"])

    def test_finding_fields_filled(self):
        for label, builder, _ in CHECK_CASES:
            with self.subTest(case=label):
                _, report = self.run_case(builder)
                for finding in report["findings"]:
                    for field in ("subject", "observed", "impact", "fix"):
                        self.assertTrue(finding[field].strip(), field)
                    self.assertIsInstance(finding["evidence"], dict)

    def test_check_counts_match(self):
        for label, builder, _ in CHECK_CASES:
            with self.subTest(case=label):
                _, report = self.run_case(builder)
                counted = {c["check"]: c["findings"] for c in report["checks"]}
                for finding in report["findings"]:
                    self.assertGreaterEqual(counted[finding["check"]], 1)
                self.assertEqual(sum(counted.values()), len(report["findings"]))

    def test_text_names_check_and_fix(self):
        for label, builder, fix in CHECK_CASES:
            with self.subTest(case=label):
                scenario = builder()
                self.load(scenario)
                proc = self.doctor("--detailed-exitcode", expect=2)
                text = " ".join(proc.stdout.split())
                for check, severity in scenarios.expected(scenario)["doctor"].items():
                    self.assertIn("%s %s" % (severity, check), text)
                self.assertIn("fix: ", proc.stdout)
                self.assertIn(" ".join(fix.split()), text)

    def test_without_detailed_exitcode_findings_exit_zero(self):
        self.load(scenarios.doctor_colocated())
        self.doctor(expect=0)


class CheckDetails(DoctorTestCase):
    def test_colocated_names_node_and_server(self):
        scenario = scenarios.doctor_colocated()
        self.load(scenario)
        finding = self.doctor_json()["findings"][0]
        self.assertEqual(finding["evidence"]["node_name"], "client-1")
        self.assertEqual(finding["evidence"]["server"], "server-1.global")
        self.assertEqual(finding["evidence"]["address"], "10.0.0.1")

    def test_reserved_lists_each_node(self):
        self.load(scenarios.doctor_no_reserved())
        finding = self.doctor_json()["findings"][0]
        nodes = {n["node_name"]: n for n in finding["evidence"]["nodes"]}
        self.assertEqual(set(nodes), {"client-2", "client-3"})
        self.assertEqual(nodes["client-2"]["reserved_memory_mb"], 0)
        self.assertEqual(nodes["client-2"]["reserved_cpu_mhz"], scenarios.RESERVED_CPU_MHZ)
        self.assertIn("client-3 (no CPU and no memory)", finding["observed"])

    def test_reserved_critical_mentions_oversubscription(self):
        self.load(scenarios.doctor_no_reserved(oversubscription=True))
        finding = self.doctor_json()["findings"][0]
        self.assertIn("oversubscription", finding["observed"])
        self.assertIs(finding["evidence"]["memory_oversubscription"], True)

    def test_reserved_read_from_node_when_stub_lacks_it(self):
        self.load(scenarios.doctor_no_reserved())
        nodes = self.nomad.get("/v1/nodes?resources=true").json()
        stripped = [{key: value for key, value in n.items() if key != "ReservedResources"}
                    for n in nodes]
        self.nomad.faults([{"path": "/v1/nodes", "status": 200, "body": json.dumps(stripped)}])
        report = self.doctor_json("--detailed-exitcode", expect=2)
        node_reads = [r for r in self.nomad.requests() if r["path"].startswith("/v1/node/")]
        self.assertEqual(len(node_reads), 4)
        self.assertEqual({n["node_name"] for n in report["findings"][0]["evidence"]["nodes"]},
                         {"client-2", "client-3"})

    def test_two_servers_only_too_few(self):
        self.load(scenarios.doctor_servers(2))
        finding = self.doctor_json("--detailed-exitcode", expect=2)["findings"][0]
        self.assertIn("less available than one", finding["impact"])

    def test_raft_missing_names_server(self):
        self.load(scenarios.doctor_raft_missing())
        finding = self.doctor_json("--detailed-exitcode", expect=2)["findings"][0]
        self.assertEqual(finding["subject"], "server-3.global")
        self.assertEqual(finding["evidence"]["raft_peers"], ["10.0.0.1:4647", "10.0.0.2:4647"])

    def test_autopilot_429_is_an_answer(self):
        self.load(scenarios.doctor_autopilot_unhealthy())
        report = self.doctor_json("--detailed-exitcode", expect=2)
        self.assertEqual(report["failed_reads"], [])
        unhealthy = report["findings"][0]["evidence"]["unhealthy_servers"]
        self.assertEqual([s["name"] for s in unhealthy], ["server-2"])

    def test_deprecated_with_replacement_is_info(self):
        scenario = scenarios.doctor_builder("doctor_deprecated_covered")
        scenario.job("default", "legacy", [{
            "Name": "worker", "MaxClientDisconnect": scenarios.seconds(3600),
            "Disconnect": {"LostAfter": scenarios.seconds(3600)}}])
        self.load(scenario.build())
        finding = self.doctor_json("--detailed-exitcode", expect=2)["findings"][0]
        self.assertEqual(finding["check"], "deprecated_disconnect_fields")
        self.assertEqual(finding["severity"], "info")
        self.assertIn("Delete the deprecated lines", finding["fix"])

    def test_deprecated_before_1_10_is_warning(self):
        scenario = scenarios.doctor_builder("doctor_deprecated_old", server_version="1.9.7")
        scenario.job("default", "legacy", [{"Name": "worker",
                                            "PreventRescheduleOnLost": True}])
        self.load(scenario.build())
        findings = self.doctor_json("--detailed-exitcode", expect=2)["findings"]
        deprecated = [f for f in findings if f["check"] == "deprecated_disconnect_fields"][0]
        self.assertEqual(deprecated["severity"], "warning")
        self.assertIn("replace = false", deprecated["fix"])

    def test_stop_after_client_disconnect_is_both_checks(self):
        scenario = scenarios.doctor_builder("doctor_stop_after")
        scenario.job("default", "legacy", [{"Name": "worker",
                                            "StopAfterClientDisconnect": scenarios.seconds(600)}])
        self.load(scenario.build())
        findings = self.doctor_json("--detailed-exitcode", expect=2)["findings"]
        self.assertEqual({f["check"] for f in findings},
                         {"group_stops_on_disconnect", "deprecated_disconnect_fields"})
        deprecated = [f for f in findings if f["check"] == "deprecated_disconnect_fields"][0]
        self.assertIn('stop_on_client_after = "10m"', deprecated["fix"])

    def test_periodic_children_skipped(self):
        scenario = scenarios.doctor_builder("doctor_children")
        scenario.job("default", "nightly-export/periodic-1700000000", [{
            "Name": "export", "MaxClientDisconnect": scenarios.seconds(5)}],
            ParentID="nightly-export", Type="batch")
        self.load(scenario.build())
        self.doctor("--detailed-exitcode", expect=0)
        child_reads = [r for r in self.nomad.requests() if "periodic-" in r["path"]]
        self.assertEqual(child_reads, [])

    def test_job_deleted_after_list_skipped(self):
        self.nomad.faults([{"path": "/v1/job/billing", "status": 404, "body": "job not found"}])
        report = self.doctor_json("--detailed-exitcode", expect=0)
        self.assertEqual(report["failed_reads"], [])
        self.assertEqual(report["cluster"]["jobs"], 2)

    def test_jobs_paged(self):
        config = write_config(self.tmp, 'nomad = { address = "%s"; per_page = 1; };\n'
                              % self.nomad.address)
        report = json.loads(self.medic("doctor", "--json", "--config", config).stdout)
        self.assertEqual(report["cluster"]["jobs"], 3)
        tokens = [r["params"].get("next_token") for r in self.nomad.requests()
                  if r["path"] == "/v1/jobs"]
        self.assertEqual(tokens, [None, "default.web", "prod.billing"])

    def test_window_lists_short_field(self):
        self.load(scenarios.doctor_short_window())
        finding = self.doctor_json("--detailed-exitcode", expect=2)["findings"][0]
        self.assertEqual(finding["evidence"]["windows"],
                         [{"field": "disconnect { lost_after }", "seconds": 30}])
        self.assertEqual(finding["evidence"]["required_window_s"], 50)

    def test_window_scales_with_rate(self):
        self.load(scenarios.doctor_short_window(lost_after_s=120, max_heartbeats_per_second=0.1))
        report = self.doctor_json("--detailed-exitcode", expect=2)
        self.assertEqual(report["heartbeat"]["ttl_min_s"], 40)
        self.assertEqual(report["heartbeat"]["required_window_s"], 170)
        self.assertEqual(report["heartbeat"]["defaults_assumed"],
                         ["heartbeat_grace", "min_heartbeat_ttl"])

    def test_window_counts_only_live_nodes(self):
        scenario = scenarios.doctor_short_window(lost_after_s=120, max_heartbeats_per_second=0.1)
        scenario["nodes"][0]["Status"] = "down"
        scenario["nodes"][1]["Status"] = "disconnected"
        self.load(scenario)
        report = self.doctor_json("--detailed-exitcode", expect=0)
        self.assertEqual(report["heartbeat"]["live_nodes"], 2)
        self.assertEqual(report["heartbeat"]["required_window_s"], 90)

    def test_string_durations_read(self):
        scenario = scenarios.doctor_short_window(lost_after_s=90)
        scenario["agent_self"] = scenarios.heartbeat_settings(
            grace="30s", min_ttl=scenarios.seconds(20), max_per_second="25")
        self.load(scenario)
        report = self.doctor_json("--detailed-exitcode", expect=2)
        self.assertEqual(report["heartbeat"]["heartbeat_grace_s"], 30)
        self.assertEqual(report["heartbeat"]["min_heartbeat_ttl_s"], 20)
        self.assertEqual(report["heartbeat"]["max_heartbeats_per_second"], 25)
        self.assertEqual(report["heartbeat"]["required_window_s"], 110)

    def test_defaults_assumed_when_unset(self):
        self.load(scenarios.doctor_colocated())
        heartbeat = self.doctor_json()["heartbeat"]
        self.assertEqual(heartbeat["defaults_assumed"],
                         ["heartbeat_grace", "min_heartbeat_ttl", "max_heartbeats_per_second"])
        self.assertIn("does not set", heartbeat["defaults_assumed_because"])

    def test_defaults_assumed_text(self):
        self.load(scenarios.doctor_colocated())
        text = " ".join(self.doctor().stdout.split())
        self.assertIn("Nomad's defaults, because config.Server in /v1/agent/self does not set", text)

    def test_unreadable_setting_assumed(self):
        scenario = scenarios.doctor_healthy()
        scenario["agent_self"] = scenarios.heartbeat_settings(grace="ten seconds")
        self.load(scenario)
        heartbeat = self.doctor_json()["heartbeat"]
        self.assertIn("heartbeat_grace", heartbeat["defaults_assumed"])
        self.assertIn("unreadable values for HeartbeatGrace", heartbeat["defaults_assumed_because"])

    def test_client_agent_assumes_defaults(self):
        scenario = scenarios.doctor_healthy()
        scenario["agent_self"] = {"config": {"Server": {"Enabled": False},
                                             "Client": {"Enabled": True}}}
        self.load(scenario)
        heartbeat = self.doctor_json()["heartbeat"]
        self.assertEqual(len(heartbeat["defaults_assumed"]), 3)
        self.assertIn("not a server", heartbeat["defaults_assumed_because"])


class Versions(DoctorTestCase):
    """Known bugs per release line, with backports and pre-releases."""

    # (role, version, expected bug IDs, expected upgrade target or None)
    CASES = [
        ("client", "1.7.5", {"native_service_leak", "cni_ipam_persistent"}, "1.7.16"),
        ("server", "1.7.5", {"native_service_leak", "node_down_deletes_services"}, "1.8.16"),
        ("client", "1.9.1", {"cni_ipam_persistent"}, "1.9.4"),
        ("server", "1.9.1", {"node_down_deletes_services"}, "1.10.4"),
        ("client", "1.9.4-beta.1", {"cni_ipam_persistent"}, "1.9.4"),
        ("server", "1.10.4-dev", {"node_down_deletes_services"}, "1.10.4"),
        ("server", "1.8.15", {"node_down_deletes_services"}, "1.8.16"),
        ("client", "1.5.3", {"native_service_leak", "cni_ipam_persistent"}, "1.7.16"),
        ("client", "v1.6.10", {"native_service_leak", "cni_ipam_persistent"}, "1.7.16"),
        ("client", "1.9.4+ent", set(), None),
        ("server", "1.10.4", set(), None),
        ("server", "1.11.0", set(), None),
        ("client", "1.12.3", set(), None),
    ]

    def findings_for(self, role, version):
        if role == "client":
            scenario = scenarios.doctor_versions(client_version=version)
        else:
            scenario = scenarios.doctor_versions(server_version=version)
        self.load(scenario)
        report = self.doctor_json()
        return [f for f in report["findings"] if f["check"] == "nomad_version_bug"]

    def test_known_bugs_by_line(self):
        for role, version, bugs, _ in self.CASES:
            with self.subTest(role=role, version=version):
                findings = self.findings_for(role, version)
                found = {b["id"] for f in findings for b in f["evidence"]["bugs"]}
                self.assertEqual(found, bugs)

    def test_upgrade_target(self):
        for role, version, bugs, target in self.CASES:
            if not bugs:
                continue
            with self.subTest(role=role, version=version):
                finding = self.findings_for(role, version)[0]
                self.assertEqual(finding["evidence"]["upgrade_to"], target)
                self.assertIn("Upgrade the %ss to %s or later" % (role, target), finding["fix"])

    def test_fix_on_own_line_named(self):
        finding = self.findings_for("client", "1.7.5")[0]
        bugs = {b["id"]: b for b in finding["evidence"]["bugs"]}
        self.assertEqual(bugs["native_service_leak"]["fixed_on_this_line"], "1.7.8")
        self.assertIn("The 1.7 line has the fix from 1.7.8", finding["impact"])

    def test_line_without_backport_named(self):
        finding = self.findings_for("server", "1.9.1")[0]
        bugs = {b["id"]: b for b in finding["evidence"]["bugs"]}
        self.assertIsNone(bugs["node_down_deletes_services"]["fixed_on_this_line"])
        self.assertIn("No 1.9 release has the fix", finding["impact"])

    def test_prerelease_explained(self):
        finding = self.findings_for("client", "1.9.4-beta.1")[0]
        self.assertIn("pre-release", finding["observed"])

    def test_role_and_agents_recorded(self):
        finding = self.findings_for("server", "1.9.1")[0]
        self.assertEqual(finding["evidence"]["role"], "server")
        self.assertEqual(finding["evidence"]["agents"],
                         ["server-1.global", "server-2.global", "server-3.global"])

    def test_unparseable_versions_are_info(self):
        for version in ("", "unknown", "1.10", "1.10.x"):
            with self.subTest(version=version):
                self.load(scenarios.doctor_versions(client_version=version))
                findings = self.doctor_json()["findings"]
                self.assertEqual([(f["check"], f["severity"]) for f in findings],
                                 [("nomad_version_unknown", "info")])


class FailedReads(DoctorTestCase):
    """A read that fails is an error: never reported as healthy."""

    def test_single_read_failure_exit_one(self):
        self.nomad.faults([{"path": "/v1/operator/raft/configuration", "status": 403,
                            "body": "Permission denied"}])
        proc = self.doctor("--detailed-exitcode", expect=1)
        self.assertNotIn("No findings", proc.stdout)
        self.assertIn("GET /v1/operator/raft/configuration", proc.stdout)
        self.assertIn("1 read of the cluster failed", proc.stderr)

    def test_single_read_failure_json(self):
        self.nomad.faults([{"path": "/v1/operator/raft/configuration", "status": 403,
                            "body": "Permission denied"}])
        report = self.doctor_json(expect=1)
        self.assertIs(report["complete"], False)
        self.assertEqual([r["read"] for r in report["failed_reads"]],
                         ["GET /v1/operator/raft/configuration"])
        self.assertIn("Permission denied", report["failed_reads"][0]["error"])
        raft = [c for c in report["checks"] if c["check"] == "raft_missing_server"][0]
        self.assertIs(raft["ran"], False)
        self.assertIn("/v1/operator/raft/configuration failed", raft["note"])

    def test_other_checks_still_run(self):
        self.load(scenarios.doctor_colocated())
        self.nomad.faults([{"path": "/v1/operator/raft/configuration", "status": 403,
                            "body": "Permission denied"}])
        report = self.doctor_json("--detailed-exitcode", expect=1)
        self.assertEqual([f["check"] for f in report["findings"]], ["colocated_server_client"])

    def test_node_list_failure_skips_node_checks(self):
        self.nomad.faults([{"path": "/v1/nodes", "status": 500, "body": "rpc error: timeout"}])
        report = self.doctor_json(expect=1)
        skipped = {c["check"] for c in report["checks"] if not c["ran"]}
        self.assertEqual(skipped, {"colocated_server_client", "client_reserved_missing",
                                   "nomad_version_bug", "nomad_version_unknown",
                                   "disconnect_window_short"})
        self.assertIsNone(report["heartbeat"])
        self.assertIsNone(report["cluster"]["clients"])

    def test_truncated_agent_self(self):
        self.nomad.faults([{"path": "/v1/agent/self", "truncate": True}])
        report = self.doctor_json(expect=1)
        self.assertEqual([r["read"] for r in report["failed_reads"]], ["GET /v1/agent/self"])
        window = [c for c in report["checks"] if c["check"] == "disconnect_window_short"][0]
        self.assertIs(window["ran"], False)

    def test_autopilot_without_healthy_field(self):
        self.nomad.faults([{"path": "/v1/operator/autopilot/health", "status": 200,
                            "body": "{}"}])
        report = self.doctor_json(expect=1)
        self.assertIn("no Healthy field", report["failed_reads"][0]["error"])

    def test_job_read_failure_marks_checks_incomplete(self):
        self.load(scenarios.doctor_short_window())
        self.nomad.faults([{"path": "/v1/job/web", "status": 403, "body": "Permission denied"}])
        report = self.doctor_json("--detailed-exitcode", expect=1)
        self.assertEqual([r["read"] for r in report["failed_reads"]],
                         ["GET /v1/job/web?namespace=default"])
        window = [c for c in report["checks"] if c["check"] == "disconnect_window_short"][0]
        self.assertIs(window["ran"], True)
        self.assertIs(window["complete"], False)
        self.assertIn("1 job read failed", window["note"])
        self.assertEqual([f["check"] for f in report["findings"]], ["disconnect_window_short"])

    def test_failure_beats_detailed_exitcode(self):
        self.load(scenarios.doctor_colocated())
        self.nomad.faults([{"path": "/v1/jobs", "status": 403, "body": "Permission denied"}])
        self.doctor("--detailed-exitcode", expect=1)

    def test_no_leader(self):
        self.nomad.mutate([{"op": "set_server_status", "name": "server-1", "status": "failed"},
                           {"op": "set_server_status", "name": "server-2", "status": "failed"}])
        report = self.doctor_json(expect=1)
        self.assertIs(report["complete"], False)
        self.assertTrue(any("No cluster leader" in r["error"] for r in report["failed_reads"]))

    def test_token_not_printed(self):
        scenario = scenarios.doctor_healthy()
        scenario["acl_token"] = "doctor-secret-5150"
        self.load(scenario)
        proc = self.medic("doctor", "--log-level", "debug",
                          env={"NOMAD_ADDR": self.nomad.address, "NOMAD_TOKEN": "doctor-secret-5150"})
        self.assertNotIn("doctor-secret-5150", proc.stdout + proc.stderr)
        proc = self.medic("doctor", env={"NOMAD_ADDR": self.nomad.address,
                                         "NOMAD_TOKEN": "wrong-token"}, expect=1)
        self.assertIn("ACL token not found", proc.stdout)


if __name__ == "__main__":
    unittest.main()
