"""Client and server restarts: ordering, safety guards, executors and two controller instances.

Each test drives the real binary against the test Nomad API server. The restart command
of both executors is tests/fake_nomad/restart_recorder.py, which logs each run and reports
the restart to the test server. The server then brings the node or server back on its next
tick, or after a delay, as the scenario sets.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

from harness import libconfig_string
from medic import MedicTestCase, scenarios, write_config

# Rows that really started: they entered `executing` at some point.
EXECUTED_STATES = ("executing", "succeeded", "failed", "unknown")

# Member names are "<Name>.<region>", while fake_nomad's /_test/restarted takes the
# scenario's server Name. This wrapper drops the region before running the recorder.
SERVER_NAME_WRAPPER = """\
import os
import sys

args = sys.argv[1:]
position = args.index("--server-name") + 1
args[position] = args[position].split(".", 1)[0]
os.execv(args[0], args)
"""


def config_value(value):
    """Format a Python value as a libconfig value: strings quoted, lists as arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(libconfig_string(item) for item in value) + "]"
    return libconfig_string(value)


def config_group(settings):
    return " ".join("%s = %s;" % (name, config_value(value)) for name, value in settings.items())


def restart_policy(address, db, mode="enforce", interval="1s", pause_file=None, client=None,
                   server=None, ineligible=None, node=None, coordination=None, breaker=None,
                   global_rate="0"):
    """Return policy text for the restart rules; the group arguments are dicts of settings.

    The orphan and GC rules are off so that a pass only reads and acts on what restarts
    need. Reads are not retried, so passes against a cluster without a leader stay short.
    Unset restart settings act at once: min_down 1m (the scenarios' nodes are down for
    2 minutes), settle 0s, no cooldown and no rate limit.
    """
    if pause_file is None:
        pause_file = os.path.join(os.path.dirname(os.path.abspath(db)), "pause")
    client_settings = {"min_down": "1m", "settle": "0s", "cooldown": "0s", "rate_limit": "0"}
    client_settings.update(client or {})
    server_settings = {"min_down": "0s", "cooldown": "0s", "rate_limit": "0"}
    server_settings.update(server or {})
    ineligible_settings = {"cooldown": "0s", "rate_limit": "0"}
    ineligible_settings.update(ineligible or {})
    lines = [
        "nomad = { address = %s; retries = 0; };" % libconfig_string(address),
        "journal = { path = %s; };" % libconfig_string(db),
        "controller = {",
        "  mode = %s; interval = %s; pause_file = %s; rate_limit = %s;"
        % (libconfig_string(mode), libconfig_string(interval), libconfig_string(pause_file),
           libconfig_string(global_rate)),
        "  breaker = { %s };" % config_group(breaker or {}),
        "};",
        "rules = {",
        "  orphan_services = { enabled = false; };",
        "  system_gc = { enabled = false; };",
        "  client_restart = { %s };" % config_group(client_settings),
        "  server_restart = { %s };" % config_group(server_settings),
        "  node_ineligible = { %s };" % config_group(ineligible_settings),
        "};",
    ]
    if node:
        lines.append("node = { %s };" % config_group(node))
    if coordination:
        lines.append("coordination = { %s };" % config_group(coordination))
    return "\n".join(lines) + "\n"


def read_recorder_log(path):
    """Return the JSON lines restart_recorder.py appended to path ([] when it never ran)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def journal_rows(db, where="1=1"):
    """Return the actions table of the journal at db as dicts, oldest first."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in con.execute("SELECT * FROM actions WHERE %s ORDER BY id" % where)]
    finally:
        con.close()


def executed_rows(db, kind=None):
    """Return the journal rows that entered executing, optionally of one kind."""
    rows = [r for r in journal_rows(db) if r["state"] in EXECUTED_STATES]
    return [r for r in rows if kind is None or r["kind"] == kind]


def write_server_wrapper(directory):
    path = os.path.join(directory, "server_name_wrapper.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SERVER_NAME_WRAPPER)
    return path


class RestartCase(MedicTestCase):
    """A MedicTestCase with the recorder as both executors' restart command."""

    def setUp(self):
        super().setUp()
        self.log = os.path.join(self.tmp, "restarts.log")
        self.wrapper = write_server_wrapper(self.tmp)

    def client_command(self, log=None):
        return self.nomad.restart_recorder_argv(log or self.log, node="{node_id}")

    def server_command(self, log=None):
        return [sys.executable, self.wrapper] + self.nomad.restart_recorder_argv(
            log or self.log, server="{node_name}")

    def write_policy(self, name="policy.conf", db=None, client=None, server=None, **kwargs):
        """Write a restart policy with the exec executor and the recorder, unless overridden."""
        client_settings = {"executor": "exec", "command": self.client_command()}
        client_settings.update(client or {})
        server_settings = {"executor": "exec", "command": self.server_command()}
        server_settings.update(server or {})
        text = restart_policy(self.nomad.address, db or self.db, client=client_settings,
                              server=server_settings, **kwargs)
        return write_config(self.tmp, text, name)

    def once(self, config, *args):
        return self.medic("once", "--config", config, *args)

    def start_run(self, config):
        """Start `nomad-medic run` with config, its output in run.log; stop_run() ends it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        self.run_log = open(os.path.join(self.tmp, "run.log"), "w+")
        self.run_child = subprocess.Popen([os.environ["NOMAD_MEDIC_BIN"], "run", "--config", config],
                                          env=env, stdout=self.run_log, stderr=subprocess.STDOUT)

    def stop_run(self):
        self.run_child.send_signal(signal.SIGTERM)
        self.assertEqual(self.run_child.wait(timeout=30), 0)
        self.run_log.close()

    def once_json(self, config, *args):
        return json.loads(self.once(config, "--json", *args).stdout)

    def recorded(self):
        return read_recorder_log(self.log)

    def node_status(self, node_id):
        return next(n for n in self.nomad.state()["nodes"] if n["ID"] == node_id)["Status"]

    def order(self, key):
        """Return the Items of the restart order Variable nomad-medic/restart/<key>, or None."""
        path = "nomad-medic/restart/" + key
        for variable in self.nomad.variables():
            if variable["Path"] == path:
                return variable.get("Items", {})
        return None

    def order_writes(self):
        return [r for r in self.mutating() if r["path"].startswith("/v1/var/nomad-medic/restart/")]


class HungClient(RestartCase):
    scenario = staticmethod(scenarios.hung_client)

    def test_restarted_once_then_succeeded(self):
        hung = scenarios.expected(self.data)["hung_nodes"][0]
        config = self.write_policy()

        self.once(config)
        runs = self.recorded()
        self.assertEqual([r["node"] for r in runs], [hung])
        rows = executed_rows(self.db, "client_restart")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["target"], hung)
        self.assertEqual(rows[0]["state"], "executing")
        self.assertEqual(self.order(hung)["state"], "running")

        # The recorder reported the restart; the node is ready on the next tick.
        self.assertEqual(self.node_status(hung), "down")
        self.nomad.tick()
        self.assertEqual(self.node_status(hung), "ready")
        self.once(config)
        rows = executed_rows(self.db, "client_restart")
        self.assertEqual([r["state"] for r in rows], ["succeeded"])
        self.assertEqual(self.order(hung)["state"], "done")

        for _ in range(3):
            self.nomad.tick()
            self.once(config)
        self.assertEqual(len(self.recorded()), 1)
        self.assertEqual(len(self.nomad.restarts()), 1)
        self.assertEqual(len(executed_rows(self.db)), 1)

    def test_waits_for_settle_after_leader_change(self):
        config = self.write_policy(client={"settle": "1h"})
        report = self.once_json(config)
        restarts = [a for a in report["actions"] if a["kind"] == "client_restart"]
        self.assertEqual([a["status"] for a in restarts], ["blocked"])
        self.assertEqual(restarts[0]["blocked_by"], "ordering")
        self.assertIn("leader changed", restarts[0]["detail"])
        self.assertEqual(self.recorded(), [])

    def test_waits_for_min_down(self):
        config = self.write_policy(client={"min_down": "5m"})
        self.once(config)
        self.assertEqual(self.recorded(), [])
        self.assertEqual(executed_rows(self.db), [])
        self.assertEqual(self.order_writes(), [])


class DryRunAndApprove(RestartCase):
    scenario = staticmethod(scenarios.hung_client)

    def test_dry_run_sends_nothing(self):
        hung = scenarios.expected(self.data)["hung_nodes"][0]
        config = self.write_policy(mode="dry-run")

        report = self.once_json(config)
        restarts = [a for a in report["actions"] if a["kind"] == "client_restart"]
        self.assertEqual([a["target"] for a in restarts], [hung])
        self.assertEqual(restarts[0]["status"], "dry_run")
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.nomad.restarts(), [])
        self.assertEqual(self.all_writes(), [])
        self.assertIsNone(self.order(hung))
        self.assertEqual([r["state"] for r in journal_rows(self.db, "kind = 'client_restart'")],
                         ["dry_run"])

    def test_enforce_config_with_dry_run_flag_sends_nothing(self):
        config = self.write_policy()
        self.once(config, "--mode", "dry-run")
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.all_writes(), [])

    def test_approve_waits_for_operator(self):
        hung = scenarios.expected(self.data)["hung_nodes"][0]
        config = self.write_policy(mode="approve")

        self.once(config)
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.order_writes(), [])
        pending = journal_rows(self.db, "state = 'pending_approval'")
        self.assertEqual([(r["kind"], r["target"]) for r in pending], [("client_restart", hung)])

        self.once(config)
        self.assertEqual(self.recorded(), [])

        self.medic("actions", "approve", str(pending[0]["id"]), "--by", "tester", "--config", config)
        self.once(config)
        self.assertEqual([r["node"] for r in self.recorded()], [hung])
        self.assertEqual(journal_rows(self.db, "id = %d" % pending[0]["id"])[0]["state"], "executing")
        self.assertEqual(self.order(hung)["state"], "running")

    def test_rejected_restart_never_runs(self):
        config = self.write_policy(mode="approve")
        self.once(config)
        pending = journal_rows(self.db, "state = 'pending_approval'")
        self.assertEqual(len(pending), 1)
        self.medic("actions", "reject", str(pending[0]["id"]), "--by", "tester", "--config", config)
        for _ in range(2):
            self.once(config)
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.order_writes(), [])


class PowerLoss(RestartCase):
    scenario = staticmethod(scenarios.power_loss)
    max_parallel = 2

    def cluster_view(self):
        """(leader Name or None, {Name: (Status, Healthy)}) as the test server has it now."""
        state = self.nomad.state()
        servers = {s["Name"]: (s["Status"], s["Healthy"]) for s in state["servers"]}
        leaders = [s["Name"] for s in state["servers"] if s["Leader"] and s["Status"] == "alive"]
        return (leaders[0] if leaders else None), servers

    def test_servers_first_then_clients(self):
        expect = scenarios.expected(self.data)
        config = self.write_policy(client={"max_parallel": self.max_parallel})
        leader_at_pass = []      # (restart seq before the pass, leader during the pass)

        for _ in range(20):
            leader, _ = self.cluster_view()
            leader_at_pass.append((len(self.nomad.restarts()), leader))
            self.once(config)
            executing = journal_rows(self.db, "state = 'executing'")
            self.assertLessEqual(len([r for r in executing if r["kind"] == "server_restart"]), 1)
            self.assertLessEqual(len([r for r in executing if r["kind"] == "client_restart"]),
                                 self.max_parallel)
            self.nomad.tick()
            nodes = self.nomad.state()["nodes"]
            _, servers = self.cluster_view()
            if (all(n["Status"] == "ready" for n in nodes) and
                    all(status == ("alive", True) for status in servers.values())):
                break
        self.once(config)

        restarts = self.nomad.restarts()
        server_restarts = [r for r in restarts if r["server"] is not None]
        client_restarts = [r for r in restarts if r["server"] is None]
        self.assertEqual(sorted(r["server"] for r in server_restarts), expect["restart_servers"])
        self.assertEqual(sorted(r["node"] for r in client_restarts), sorted(expect["restart_nodes"]))

        # Servers first: every server restart precedes every client restart.
        self.assertLess(max(r["seq"] for r in server_restarts), min(r["seq"] for r in client_restarts))
        # One server at a time: each came back before the next one was restarted.
        for earlier, later in zip(server_restarts, server_restarts[1:]):
            self.assertIsNotNone(earlier["server_alive_time"])
            self.assertLessEqual(earlier["server_alive_time"], later["time"])
        # Never the leader's host.
        ends = [seq for seq, _ in leader_at_pass[1:]] + [len(restarts)]
        for (start, leader), end in zip(leader_at_pass, ends):
            for entry in restarts[start:end]:
                self.assertNotEqual(entry["server"], leader)
        self.assertEqual(self.cluster_view()[0], "server-1")
        # At most max_parallel clients down after their restart at any moment.
        for entry in client_restarts:
            busy = [r for r in client_restarts
                    if r["time"] <= entry["time"] and
                    (r["node_ready_time"] is None or r["node_ready_time"] > entry["time"])]
            self.assertLessEqual(len(busy), self.max_parallel)

        # The journal shows the same order.
        rows = executed_rows(self.db)
        server_ids = [r["id"] for r in rows if r["kind"] == "server_restart"]
        client_ids = [r["id"] for r in rows if r["kind"] == "client_restart"]
        self.assertEqual(len(server_ids), 2)
        self.assertEqual(len(client_ids), 6)
        self.assertLess(max(server_ids), min(client_ids))
        self.assertEqual({r["state"] for r in rows}, {"succeeded"})

        # Both server orders end done, the first one written when the leader was back.
        server_orders = [v["Items"] for v in self.nomad.variables()
                         if v["Path"].startswith("nomad-medic/restart/") and
                         v.get("Items", {}).get("kind") == "server_restart"]
        self.assertEqual(sorted((o["target"], o["state"]) for o in server_orders),
                         [("server-2.global", "done"), ("server-3.global", "done")])

        # Everything is back.
        self.assertTrue(all(n["Status"] == "ready" for n in self.nomad.state()["nodes"]))
        self.assertEqual(self.cluster_view()[1], {"server-1": ("alive", True), "server-2": ("alive", True),
                                                  "server-3": ("alive", True)})

    def test_first_server_restart_runs_without_a_leader(self):
        config = self.write_policy()
        report = self.once_json(config)

        restarts = self.nomad.restarts()
        self.assertEqual(len(restarts), 1)
        self.assertIn(restarts[0]["server"], ("server-2", "server-3"))
        self.assertIsNone(restarts[0]["node"])
        started = [a for a in report["actions"] if a["status"] == "in_progress"]
        self.assertEqual([a["kind"] for a in started], ["server_restart"])
        self.assertIn("no cluster leader", started[0]["detail"])
        # Without a leader no Variable can be written, and no client is touched.
        self.assertEqual(self.order_writes(), [])
        self.assertEqual([r["node"] for r in self.recorded() if "node" in r], [])


class Partition(RestartCase):
    scenario = staticmethod(scenarios.partition)

    def test_nothing_restarted_and_output_names_servers(self):
        config = self.write_policy(client={"min_down": "0s"})

        for _ in range(3):
            report = self.once_json(config)
            self.nomad.tick()
        plan = self.plan_json("--config", config)

        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.nomad.restarts(), [])
        self.assertEqual(self.order_writes(), [])
        self.assertEqual(executed_rows(self.db), [])

        for output in (report, plan):
            restarts = [a for a in output["actions"] if a["kind"] in ("client_restart", "server_restart")]
            self.assertNotEqual(restarts, [])
            for action in restarts:
                self.assertEqual(action["status"], "blocked")
                self.assertIn(action["blocked_by"], ("breaker", "ordering"))
                self.assertIn("server", action["detail"])
        server = [a for a in report["actions"] if a["kind"] == "server_restart"]
        self.assertEqual([a["target"] for a in server], ["server-3.global"])
        self.assertEqual(server[0]["blocked_by"], "breaker")
        self.assertIn("partition", server[0]["detail"])
        # The unreachable clients are reported, with no restart proposed for them.
        down = {a["subject"] for a in report["advisories"] if a["rule"] == "down_nodes"}
        self.assertEqual(down, set(scenarios.expected(self.data)["unreachable_nodes"]))

    def test_stale_heartbeat_is_no_restart_candidate(self):
        config = self.write_policy(client={"min_down": "0s"}, breaker={"max_unhealthy_share": 1.0})
        report = self.once_json(config)
        self.assertEqual([a for a in report["actions"] if a["kind"] == "client_restart"], [])


class Flapping(RestartCase):
    scenario = staticmethod(scenarios.flapping)

    def test_marked_ineligible_not_restarted_in_a_loop(self):
        flapper = scenarios.expected(self.data)["flapping_nodes"][0]
        config = self.write_policy(client={"min_down": "0s"})
        marked_after = None

        for step in range(8):
            self.once(config)
            posts = [r for r in self.mutating() if r["path"] == "/v1/node/%s/eligibility" % flapper]
            if posts and marked_after is None:
                marked_after = len(self.nomad.restarts())
            self.nomad.tick()

        posts = [r for r in self.mutating() if r["path"] == "/v1/node/%s/eligibility" % flapper]
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["method"], "POST")
        self.assertEqual(json.loads(posts[0]["body"])["Eligibility"], "ineligible")
        node = next(n for n in self.nomad.state()["nodes"] if n["ID"] == flapper)
        self.assertEqual(node["SchedulingEligibility"], "ineligible")
        rows = executed_rows(self.db, "node_ineligible")
        self.assertEqual([(r["target"], r["state"]) for r in rows], [(flapper, "succeeded")])

        # Restarts stop once the node counts as flapping: fewer than flap_limit (3) of them,
        # and none after the marking.
        restarts = self.nomad.restarts()
        self.assertLess(len(restarts), 3)
        self.assertEqual(len(restarts), marked_after)
        self.assertTrue(all(r["node"] == flapper for r in restarts))


class NeverReturns(RestartCase):
    scenario = staticmethod(scenarios.never_returns)

    def test_timeout_fails_row_and_stops_sequence(self):
        hung = scenarios.expected(self.data)["never_ready"][0]
        config = self.write_policy(client={"ready_timeout": "3s"})

        self.once(config)
        self.assertEqual([r["node"] for r in self.recorded()], [hung])
        row_id = executed_rows(self.db, "client_restart")[0]["id"]

        self.nomad.tick()
        self.once(config)
        self.assertEqual(journal_rows(self.db, "id = %d" % row_id)[0]["state"], "executing")

        time.sleep(4.2)       # past ready_timeout, counted in whole seconds
        self.once(config)
        row = journal_rows(self.db, "id = %d" % row_id)[0]
        self.assertEqual(row["state"], "failed")
        self.assertIn("did not come back within 3s", row["last_error"])
        self.assertEqual(self.order(hung)["state"], "failed")

        for _ in range(3):
            self.nomad.tick()
            report = self.once_json(config)
        self.assertEqual(len(self.recorded()), 1)
        self.assertEqual(len(executed_rows(self.db, "client_restart")), 1)
        blocked = [a for a in report["actions"] if a["kind"] == "client_restart"]
        self.assertEqual([a["status"] for a in blocked], ["blocked"])
        self.assertIn("nomad-medic/restart/%s" % hung, blocked[0]["detail"])

        # Deleting the failed order is how an operator allows another attempt.
        self.nomad.mutate([{"op": "delete_variable", "path": "nomad-medic/restart/" + hung}])
        self.once(config)
        self.assertEqual([r["node"] for r in self.recorded()], [hung, hung])


class NodeAgent(RestartCase):
    """The node-agent executor: the cluster scope writes the order, the node scope runs it."""

    def setUp(self):
        super().setUp()
        now = time.time()
        builder = scenarios.ScenarioBuilder("node_agent")
        scenarios.three_servers(builder)
        scenarios.ready_clients(builder, 3, now)
        # Down for two minutes, and no heartbeat Variable: only the node scope can write it.
        self.node = builder.node("client-4", status="down", down_for_s=120)
        self.nomad.load(builder.build())

        # The node scope reads empty host directories, and its host rules are off.
        self.node_db = os.path.join(self.tmp, "node.db")
        self.node_log = os.path.join(self.tmp, "node-restarts.log")
        host = os.path.join(self.tmp, "host")
        for sub in ("netns", "cni", "ipam", "ipam-legacy"):
            os.makedirs(os.path.join(host, sub))

        node_text = "\n".join([
            "nomad = { address = %s; retries = 0; };" % libconfig_string(self.nomad.address),
            "journal = { path = %s; };" % libconfig_string(self.node_db),
            "controller = { mode = \"enforce\"; pause_file = %s; };"
            % libconfig_string(os.path.join(self.tmp, "node-pause")),
            "rules = { netns_leaks = { enabled = false; }; port_conflicts = { enabled = false; }; };",
            "node = { %s };" % config_group({
                "node_id": self.node["ID"],
                "netns_dir": os.path.join(host, "netns"),
                "cni_cache_dir": os.path.join(host, "cni"),
                "ipam_dir": os.path.join(host, "ipam"),
                "ipam_dir_legacy": os.path.join(host, "ipam-legacy"),
                "iptables": "true",
                "iptables_save": "true",
                "ip": "true",
                "restart_command": self.nomad.restart_recorder_argv(self.node_log, node=self.node["ID"]),
            }),
            "",
        ])
        self.node_config = write_config(self.tmp, node_text, "node.conf")

        self.cluster_config = self.write_policy(client={"executor": "node-agent"})

    def node_once(self):
        return self.medic("once", "--scope", "node", "--config", self.node_config)

    def client_restarts(self, report):
        return [a for a in report["actions"] if a["kind"] == "client_restart"]

    def test_heartbeat_order_outcome(self):
        node_id = self.node["ID"]

        # Without a heartbeat the down node is only reported.
        report = self.once_json(self.cluster_config)
        self.assertEqual(self.client_restarts(report), [])
        self.assertIn(node_id, {a["subject"] for a in report["advisories"] if a["rule"] == "down_nodes"})

        # The node scope writes this host's heartbeat through the servers.
        self.node_once()
        heartbeat = next(v for v in self.nomad.variables()
                         if v["Path"] == scenarios.heartbeat_path(node_id))
        self.assertLessEqual(abs(int(heartbeat["Items"]["host_alive_at"]) - time.time()), 30)
        self.assertEqual(read_recorder_log(self.node_log), [])

        # Now the cluster scope proposes the restart and writes the order.
        report = self.once_json(self.cluster_config)
        restarts = self.client_restarts(report)
        self.assertEqual([(a["target"], a["status"]) for a in restarts], [(node_id, "in_progress")])
        order = self.order(node_id)
        self.assertEqual(order["state"], "pending")
        self.assertEqual(order["executor"], "node-agent")
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.nomad.restarts(), [])

        # The node scope carries it out, journals it locally and writes the outcome back.
        self.node_once()
        self.assertEqual([r["node"] for r in read_recorder_log(self.node_log)], [node_id])
        self.assertEqual(self.order(node_id)["state"], "done")
        local = journal_rows(self.node_db, "kind = 'client_restart'")
        self.assertEqual([(r["target"], r["state"]) for r in local], [(node_id, "succeeded")])

        # The node is ready on the next tick; the cluster pass then finishes the row.
        self.nomad.tick()
        self.once(self.cluster_config)
        rows = executed_rows(self.db, "client_restart")
        self.assertEqual([(r["target"], r["state"]) for r in rows], [(node_id, "succeeded")])

        # A second node pass finds the order done and runs nothing.
        self.node_once()
        self.assertEqual(len(read_recorder_log(self.node_log)), 1)
        self.assertEqual(len(self.nomad.restarts()), 1)

    def test_node_scope_ignores_exec_orders(self):
        node_id = self.node["ID"]
        self.node_once()
        exec_config = self.write_policy(name="exec.conf")
        self.once(exec_config)
        self.assertEqual([r["node"] for r in self.recorded()], [node_id])
        self.assertEqual(self.order(node_id)["executor"], "exec")
        self.node_once()
        self.assertEqual(read_recorder_log(self.node_log), [])


def binary():
    path = os.environ.get("NOMAD_MEDIC_BIN")
    if not path:
        raise RuntimeError("NOMAD_MEDIC_BIN is not set; export NOMAD_MEDIC_BIN=/path/to/build/nomad-medic")
    return path


class Instance:
    """One `nomad-medic run` process with its own journal, recorder log and stderr file."""

    def __init__(self, case, name):
        self.name = name
        self.db = os.path.join(case.tmp, "%s.db" % name)
        self.log = os.path.join(case.tmp, "%s-restarts.log" % name)
        self.stderr_path = os.path.join(case.tmp, "%s.stderr" % name)
        self.config = case.write_policy(
            name="%s.conf" % name, db=self.db,
            client={"command": case.client_command(self.log), "max_parallel": 1, "min_down": "0s"},
            coordination={"lock_ttl": "10s", "lock_delay": "1s"})
        self.process = None
        self.stopped_at = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
        self.stderr = open(self.stderr_path, "w", encoding="utf-8")
        self.process = subprocess.Popen([binary(), "run", "--config", self.config], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self.stderr)

    def stop(self, sig):
        """Send sig and return the exit status (negative: killed by a signal)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.stopped_at = time.time()
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self):
        self.stop(signal.SIGTERM)
        if self.process is not None:
            self.stderr.close()

    def stderr_text(self):
        with open(self.stderr_path, encoding="utf-8") as handle:
            return handle.read()

    def restarts(self):
        return read_recorder_log(self.log)


class TwoInstances(RestartCase):
    """Two `run` instances share the lock; only the holder acts, and the other takes over."""

    def setUp(self):
        super().setUp()
        now = time.time()
        builder = scenarios.ScenarioBuilder("two_instances")
        scenarios.three_servers(builder)
        scenarios.ready_clients(builder, 3, now)
        # These hang once both instances run; their hosts keep heartbeating.
        self.hung = []
        for i in (4, 5, 6):
            node = builder.node("client-%d" % i, restart={"ready_after_s": 4})
            builder.heartbeat(node, now, scenarios.FRESH_HEARTBEAT_AGE_S, False, "agent hung")
            self.hung.append(node["ID"])
        # lock_ttl_factor 1: the lock expires one TTL after the last renewal.
        self.nomad.load(builder.build(lock_ttl_factor=1))
        self.first = Instance(self, "first")
        self.second = Instance(self, "second")
        self.addCleanup(self.first.close)
        self.addCleanup(self.second.close)

    def wait_for(self, what, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        self.fail("timed out after %.0f s waiting for %s\nfirst:\n%s\nsecond:\n%s"
                  % (timeout, what, self.first.stderr_text()[-3000:], self.second.stderr_text()[-3000:]))

    def take_over(self, sig, timeout):
        self.first.start()
        self.wait_for("the first instance to take the lock",
                      lambda: "acquired the lock" in self.first.stderr_text(), 10)
        self.second.start()
        self.wait_for("the second instance to stand by",
                      lambda: "standby" in self.second.stderr_text(), 10)
        self.nomad.mutate([{"op": "set_node_status", "id": node_id, "status": "down"}
                           for node_id in self.hung])
        self.wait_for("the first restart", lambda: len(self.first.restarts()) == 1, 15)
        in_flight = self.first.restarts()[0]["node"]
        self.assertEqual(self.first.stop(sig), 0 if sig == signal.SIGTERM else -sig)
        self.wait_for("every hung client to be restarted and ready",
                      lambda: (len(self.nomad.restarts()) == 3 and
                               all(n["Status"] == "ready" for n in self.nomad.state()["nodes"])),
                      timeout)
        time.sleep(1.5)       # a few more passes of the second instance
        self.assertEqual(self.second.stop(signal.SIGTERM), 0)
        for instance in (self.first, self.second):
            self.assertNotIn("AddressSanitizer", instance.stderr_text())
            self.assertNotIn("runtime error", instance.stderr_text())
        return in_flight

    def check_take_over(self, in_flight):
        first_runs = self.first.restarts()
        second_runs = self.second.restarts()
        # Each hung client was restarted exactly once, the in-flight one by the first instance.
        self.assertEqual([r["node"] for r in first_runs], [in_flight])
        self.assertEqual(sorted(r["node"] for r in first_runs + second_runs), sorted(self.hung))
        self.assertEqual(len(self.nomad.restarts()), 3)

        # The journals agree: the second instance acted only after the first one stopped.
        first_rows = executed_rows(self.first.db)
        second_rows = executed_rows(self.second.db)
        self.assertEqual([r["target"] for r in first_rows], [in_flight])
        self.assertEqual(sorted(r["target"] for r in second_rows), sorted(set(self.hung) - {in_flight}))
        for row in second_rows:
            self.assertGreaterEqual(row["executed_at"], int(self.first.stopped_at))
            self.assertEqual(row["state"], "succeeded")
        self.assertEqual([row for row in journal_rows(self.second.db)
                          if row["created_at"] < int(self.first.stopped_at)], [])

    def test_sigterm_releases_lock(self):
        in_flight = self.take_over(signal.SIGTERM, 40)
        self.assertIn("released the lock", self.first.stderr_text())
        self.check_take_over(in_flight)

    def test_sigkill_lock_expires(self):
        in_flight = self.take_over(signal.SIGKILL, 60)
        self.assertNotIn("released the lock", self.first.stderr_text())
        self.check_take_over(in_flight)
        # The second instance waited for the lock to expire: its first restart came at least one
        # TTL (10 s) after the first instance last acquired or renewed the lock. Renewals come every
        # third of the TTL, so the kill itself may be up to 3.3 s later than that.
        lock_writes = [r for r in self.nomad.requests()
                       if r["method"] == "PUT" and r["path"] == "/v1/var/nomad-medic/lock"
                       and r["time"] <= self.first.stopped_at]
        renewals = [r["time"] for r in lock_writes if "lock-renew" in r["params"]]
        held_until = (max(renewals) if renewals
                      else min(r["time"] for r in lock_writes if "lock-acquire" in r["params"])) + 10.0
        first_second = min(r["time"] for r in self.second.restarts())
        self.assertGreaterEqual(first_second, held_until - 0.5)


class OrderDeletedWhileWatching(RestartCase):
    """A restart blocked by its failed order runs again within an interval once the order is deleted."""

    scenario = staticmethod(scenarios.never_returns)

    def test_deleted_order_retried_soon(self):
        hung = scenarios.expected(self.data)["never_ready"][0]
        self.start_run(self.write_policy(interval="3s", client={"ready_timeout": "3s"}))
        try:
            deadline = time.time() + 30
            while time.time() < deadline and (self.order(hung) or {}).get("state") != "failed":
                time.sleep(0.2)
            self.assertEqual(self.order(hung)["state"], "failed")
            # Let a pass see the failed order and block the restart on it.
            time.sleep(8)
            self.assertEqual(len(self.recorded()), 1)
            # The operator's documented fix: delete the order Variable. No watched list changes.
            self.nomad.mutate([{"op": "delete_variable", "path": "nomad-medic/restart/" + hung}])
            deleted = time.time()
            while time.time() < deleted + 35 and len(self.recorded()) < 2:
                time.sleep(0.2)
            self.assertEqual(len(self.recorded()), 2)
            self.assertLess(time.time() - deleted, 8, "the retry waited for the ten-interval resync")
        finally:
            self.stop_run()


class MinDownWhileWatching(RestartCase):
    """A down client that reaches min_down between passes is restarted then, not at the next resync."""

    scenario = staticmethod(scenarios.hung_client)

    def test_min_down_is_a_due_time(self):
        # The hung client has been down for 120 s; min_down 126 s passes about 6 s after start.
        config = self.write_policy(mode="dry-run", interval="2s", client={"min_down": "2m6s"})
        started = time.time()
        self.start_run(config)
        try:
            deadline = time.time() + 25
            proposed = []
            while time.time() < deadline and not proposed:
                time.sleep(0.2)
                # Never open the journal before the controller has created it.
                if not os.path.exists(self.db):
                    continue
                try:
                    proposed = [r for r in journal_rows(self.db) if r["kind"] == "client_restart"]
                except sqlite3.OperationalError:
                    continue
            self.assertTrue(proposed, "the client restart was never proposed")
            # Ten intervals (the resync) would be 20 s.
            self.assertLess(time.time() - started, 14)
        finally:
            self.stop_run()


if __name__ == "__main__":
    unittest.main()
