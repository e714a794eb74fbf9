"""Randomized outage timelines driven through `nomad-medic once`, checking the restart invariants.

Each timeline is a generated cluster plus changes applied on later ticks. The cluster has
servers that are failed, unhealthy or leading, clients hung with fresh or stale host
heartbeats, restarts that come back after some ticks or never, and sometimes a server and a
client on one host. The changes are server failures (the leader's too), leader changes,
hangs, flaps and recoveries. A timeline runs as up to MAX_PASSES passes with
POST /_test/tick between them. After every run the invariants are checked against the test
server's restart record, its state before each pass and the journal:

- no client restart without a stable leader: a leader, every server alive and healthy (so
  autopilot healthy), and no server restart in flight;
- never two server restarts in flight, never a restart of the leader's host;
- never more than max_parallel client restarts in flight;
- no rule starts more actions than its rate limit allows, nor all rules more than the global one;
- a node flagged as flapping (node_ineligible started) is not restarted afterwards.

RANDOM_SEED=<n> replays a set of runs, RANDOM_TIMELINE=<i> only run i of it, and
RESTART_RANDOM_RUNS=<n> changes the number of runs (200 by default). Recoveries and
timeline changes happen only on ticks, so the cluster stays the same during a pass.
"""

import json
import os
import queue
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import unittest

from harness import FakeNomad, run_medic, write_config
from medic import scenarios
from test_restarts import EXECUTED_STATES, restart_policy, write_server_wrapper

RUNS = int(os.environ.get("RESTART_RANDOM_RUNS", "200"))
MAX_PASSES = 12
LAST_EVENT_TICK = 6
WORKERS = 3
# A restart that started less than ready_timeout minus this many seconds ago cannot have timed out.
NOW_SLACK_S = 0.5
STALE_HEARTBEAT_AGE_S = 600


def duration_seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]]


def rate_capacity(text):
    """Return the bucket size of a rate such as "3/h", or None for "0" (no limit)."""
    return None if text == "0" else int(text.split("/", 1)[0])


class Timeline:
    """One generated scenario, its policy settings and a readable description."""

    def __init__(self, rng, now):
        self.rng = rng
        self.now = now
        self.builder = scenarios.ScenarioBuilder("random-%d" % rng.randrange(1 << 30))
        self.notes = []
        self.servers = []
        self.clients = []
        self.params = {
            "max_parallel": rng.randint(1, 3),
            "client_rate": rng.choice(["2/h", "3/h", "5/h"]),
            "server_rate": rng.choice(["1/h", "2/h", "3/h"]),
            "ineligible_rate": rng.choice(["1/h", "2/h"]),
            "global_rate": rng.choice(["0", "0", "4/h", "6/h"]),
            "client_timeout": rng.choice(["1s", "2s", "10m"]),
            "server_timeout": rng.choice(["1s", "2s", "10m"]),
            "flap_limit": rng.choice([2, 3]),
            "breaker_share": rng.choice([0.3, 0.5, 1.0]),
        }
        self.build_servers()
        self.build_clients()
        self.build_events()

    def restart_behaviour(self, never_share):
        roll = self.rng.random()
        if roll < never_share:
            return {"never": True}
        return {"ready_after_ticks": 1 if roll < 0.7 else 2}

    def build_servers(self):
        count = self.rng.choice([3, 3, 3, 5])
        for i in range(count):
            roll = self.rng.random()
            status, healthy = "alive", True
            if roll < 0.25:
                status = "failed"
            elif roll < 0.4:
                healthy = False
            self.servers.append({"Name": "server-%d" % (i + 1), "Status": status, "Healthy": healthy,
                                 "_restart": self.restart_behaviour(0.15)})
        alive = [s for s in self.servers if s["Status"] == "alive"]
        candidates = [s for s in alive if s["Healthy"]] or alive
        if len(alive) >= count // 2 + 1 and candidates and self.rng.random() < 0.85:
            leader = self.rng.choice(candidates)
            leader["Leader"] = True
            # A half-dead leader: still leading, but lagging in autopilot.
            if self.rng.random() < 0.25:
                leader["Healthy"] = False
        for server in self.servers:
            self.notes.append("%s %s%s%s restart=%s" % (
                server["Name"], server["Status"], "" if server["Healthy"] else " unhealthy",
                " leader" if server.get("Leader") else "", server["_restart"]))

    def build_clients(self):
        count = self.rng.randint(3, 7)
        combined = self.rng.random() < 0.3
        for i in range(count):
            name = "client-%d" % (i + 1)
            roll = self.rng.random()
            behaviour = self.restart_behaviour(0.2)
            if roll < 0.4:
                kind, node = "ready", self.builder.node(name, restart=behaviour)
            else:
                node = self.builder.node(name, status="down", down_for_s=self.rng.choice([30, 120, 600]),
                                         restart=behaviour)
                kind = self.rng.choice(["fresh", "fresh", "stale", "none"])
            if kind in ("ready", "fresh"):
                self.heartbeat(node, 5, kind == "ready")
            elif kind == "stale":
                self.heartbeat(node, STALE_HEARTBEAT_AGE_S, True)
            self.clients.append(node)
            self.notes.append("%s %s restart=%s" % (name, kind, behaviour))
        if combined:
            # The first server's host also runs a client: restarting either restarts both.
            node = self.clients[0]
            server = self.servers[0]
            node["HTTPAddr"] = "10.0.0.1:4646"
            server["node_id"] = node["ID"]
            self.notes.append("%s shares its host with %s" % (node["Name"], server["Name"]))

    def heartbeat(self, node, age_s, healthy):
        self.builder.heartbeat(node, self.now, age_s, healthy, "ok" if healthy else "agent hung")

    def heartbeat_op(self, node, age_s):
        return {"op": "set_variable", "path": scenarios.heartbeat_path(node["ID"]),
                "items": {"host_alive_at": str(int(self.now) - age_s), "agent_healthy": "false",
                          "agent_message": "agent hung"}}

    def event(self, tick, op, note):
        self.builder.at(op, at_tick=tick)
        self.notes.append("tick %d: %s" % (tick, note))

    def build_events(self):
        for _ in range(self.rng.randint(0, 6)):
            tick = self.rng.randint(1, LAST_EVENT_TICK)
            choice = self.rng.random()
            server = self.rng.choice(self.servers)
            node = self.rng.choice(self.clients)
            if choice < 0.2:
                leader = [s for s in self.servers if s.get("Leader")]
                if leader and self.rng.random() < 0.5:
                    server = leader[0]
                self.event(tick, {"op": "set_server_status", "name": server["Name"], "status": "failed"},
                           "%s fails" % server["Name"])
            elif choice < 0.3:
                self.event(tick, {"op": "set_server_status", "name": server["Name"], "status": "alive"},
                           "%s alive again" % server["Name"])
            elif choice < 0.4:
                healthy = self.rng.random() < 0.5
                self.event(tick, {"op": "set_server_healthy", "name": server["Name"], "value": healthy},
                           "%s healthy=%s" % (server["Name"], healthy))
            elif choice < 0.5:
                self.event(tick, {"op": "set_leader", "name": server["Name"]},
                           "leader moves to %s" % server["Name"])
            elif choice < 0.75:
                age = self.rng.choice([5, STALE_HEARTBEAT_AGE_S])
                self.event(tick, self.heartbeat_op(node, age), "%s heartbeat age %ds" % (node["Name"], age))
                self.event(tick, {"op": "set_node_status", "id": node["ID"], "status": "down"},
                           "%s hangs" % node["Name"])
            elif choice < 0.9:
                self.event(tick, self.heartbeat_op(node, 5), "%s heartbeat fresh" % node["Name"])
                for step in range(4):
                    status = "down" if step % 2 == 0 else "ready"
                    self.event(min(tick + step, LAST_EVENT_TICK + 3),
                               {"op": "set_node_status", "id": node["ID"], "status": status},
                               "%s flaps %s" % (node["Name"], status))
            else:
                self.event(tick, {"op": "set_node_status", "id": node["ID"], "status": "ready"},
                           "%s recovers alone" % node["Name"])

    def scenario(self):
        for server in self.servers:
            self.builder.server(server["Name"], status=server["Status"], leader=bool(server.get("Leader")),
                                healthy=server["Healthy"], node=next(
                                    (n for n in self.clients if n["ID"] == server.get("node_id")), None),
                                restart=server["_restart"])
        return self.builder.build()

    def policy(self, nomad, db, client_command, server_command):
        p = self.params
        return restart_policy(
            nomad.address, db,
            client={"executor": "exec", "command": client_command, "min_down": "0s", "settle": "0s",
                    "cooldown": "0s", "rate_limit": p["client_rate"], "max_parallel": p["max_parallel"],
                    "ready_timeout": p["client_timeout"]},
            server={"executor": "exec", "command": server_command, "min_down": "0s", "cooldown": "0s",
                    "rate_limit": p["server_rate"], "ready_timeout": p["server_timeout"]},
            ineligible={"cooldown": "0s", "rate_limit": p["ineligible_rate"], "flap_limit": p["flap_limit"]},
            breaker={"max_unhealthy_share": p["breaker_share"]},
            global_rate=p["global_rate"])


class PassRecord:
    """The cluster before one pass, and what the pass left executing."""

    def __init__(self, index, state):
        self.index = index
        self.tick = state["tick"]
        self.seq_before = len(state["restarts"])
        self.servers = {s["Name"]: s for s in state["servers"]}
        self.nodes = {n["ID"]: n for n in state["nodes"]}
        leaders = [s for s in state["servers"] if s["Leader"] and s["Status"] == "alive"]
        self.leader = leaders[0]["Name"] if leaders else None
        self.leader_node = leaders[0].get("node_id") if leaders else None
        self.seq_after = None
        self.executing = []

    def server_ok(self, name):
        server = self.servers[name]
        return server["Status"] == "alive" and server["Healthy"]

    def cluster_stable(self):
        return self.leader is not None and all(
            self.server_ok(name) for name, s in self.servers.items() if s["Status"] != "left")


def is_server_restart(entry):
    return "--server-name" in (entry.get("argv") or [])


class Run:
    """One timeline run on a worker's test server, with its own journal and recorder log."""

    def __init__(self, worker, index, seed):
        self.worker = worker
        self.index = index
        self.seed = seed
        self.timeline = Timeline(random.Random(seed), time.time())
        self.violations = []
        self.passes = []
        self.counts = {"server restarts": 0, "client restarts": 0, "ineligible": 0}

    def describe(self):
        return "run %d (seed %d), params %s:\n    %s" % (
            self.index, self.seed, json.dumps(self.timeline.params, sort_keys=True),
            "\n    ".join(self.timeline.notes))

    def violation(self, text):
        self.violations.append(text)

    def execute(self):
        nomad = self.worker.nomad
        directory = tempfile.mkdtemp(prefix="run-", dir=self.worker.tmp)
        db = os.path.join(directory, "journal.db")
        log = os.path.join(directory, "restarts.log")
        nomad.load(self.timeline.scenario())
        client_command = nomad.restart_recorder_argv(log, node="{node_id}")
        server_command = [sys.executable, self.worker.wrapper] + nomad.restart_recorder_argv(
            log, server="{node_name}")
        config = write_config(directory, self.timeline.policy(nomad, db, client_command, server_command))

        try:
            for index in range(MAX_PASSES):
                record = PassRecord(index, nomad.state())
                proc = run_medic(["once", "--config", config], timeout=120)
                if proc.returncode != 0:
                    self.violation("pass %d exited %d: %s" % (index, proc.returncode, proc.stderr[-2000:]))
                    return
                restarts = nomad.restarts()
                record.seq_after = len(restarts)
                record.executing = journal(db, "state = 'executing'")
                self.passes.append(record)
                if (record.tick >= LAST_EVENT_TICK + 3 and record.seq_after == record.seq_before and
                        not record.executing):
                    break
                nomad.tick()
            self.check(nomad.restarts(), journal(db))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    # -- invariants --------------------------------------------------------------

    def pass_of(self, entry):
        for record in self.passes:
            if record.seq_before < entry["seq"] <= record.seq_after:
                return record
        return None

    def back_since(self, entry, record, server):
        """True when the agent restarted by entry was seen back at a pass after its own, up to record."""
        started = self.pass_of(entry)
        for later in self.passes[started.index + 1:record.index + 1]:
            if server and later.server_ok(entry["server"]):
                return True
            if not server and later.nodes[entry["node"]]["Status"] == "ready":
                return True
        return False

    def surely_in_flight(self, earlier, record, at, server):
        """True when the product must still count earlier as in flight at the pass of time at."""
        timeout = duration_seconds(self.timeline.params["server_timeout" if server else "client_timeout"])
        if at - earlier["time"] >= timeout - NOW_SLACK_S:
            return False
        return not self.back_since(earlier, record, server)

    def check(self, restarts, rows):
        params = self.timeline.params
        self.counts["server restarts"] = len([r for r in restarts if is_server_restart(r)])
        self.counts["client restarts"] = len(restarts) - self.counts["server restarts"]
        self.counts["ineligible"] = len([r for r in rows if r["kind"] == "node_ineligible" and
                                         r["state"] in EXECUTED_STATES])
        for record in self.passes:
            servers = [r for r in record.executing if r["kind"] == "server_restart"]
            clients = [r for r in record.executing if r["kind"] == "client_restart"]
            if len(servers) > 1:
                self.violation("after pass %d, %d server restarts are executing in the journal"
                               % (record.index, len(servers)))
            if len(clients) > params["max_parallel"]:
                self.violation("after pass %d, %d client restarts are executing, max_parallel is %d"
                               % (record.index, len(clients), params["max_parallel"]))

        for entry in restarts:
            record = self.pass_of(entry)
            if record is None:
                self.violation("restart %s happened outside any pass" % entry)
                continue
            same_pass = [r for r in restarts if record.seq_before < r["seq"] < entry["seq"]]
            earlier = [r for r in restarts if r["seq"] <= record.seq_before]
            server = is_server_restart(entry)
            if server and entry["server"] == record.leader:
                self.violation("pass %d restarted the leader %s" % (record.index, entry["server"]))
            if not server and record.leader_node is not None and entry["node"] == record.leader_node:
                self.violation("pass %d restarted client %s on the leader's host" % (record.index, entry["node"]))
            if server:
                self.check_server_restart(entry, record, same_pass, earlier)
            else:
                self.check_client_restart(entry, record, same_pass, earlier)

        self.check_rates(rows)
        self.check_flapping(restarts, rows)

    def check_server_restart(self, entry, record, same_pass, earlier):
        if any(is_server_restart(r) for r in same_pass):
            self.violation("pass %d restarted two servers: %s" % (record.index, entry["server"]))
        for other in earlier:
            if is_server_restart(other) and self.surely_in_flight(other, record, entry["time"], True):
                self.violation("pass %d restarted %s while the restart of %s (pass %d) was in flight"
                               % (record.index, entry["server"], other["server"], self.pass_of(other).index))

    def check_client_restart(self, entry, record, same_pass, earlier):
        if record.leader is None:
            self.violation("pass %d restarted client %s without a leader" % (record.index, entry["node"]))
        elif not record.cluster_stable():
            bad = [n for n, s in record.servers.items() if s["Status"] != "left" and not record.server_ok(n)]
            self.violation("pass %d restarted client %s while servers %s were failed or unhealthy"
                           % (record.index, entry["node"], bad))
        if any(is_server_restart(r) for r in same_pass):
            self.violation("pass %d restarted client %s after a server in the same pass"
                           % (record.index, entry["node"]))
        for other in earlier:
            if is_server_restart(other) and self.surely_in_flight(other, record, entry["time"], True):
                self.violation("pass %d restarted client %s while server %s's restart was in flight"
                               % (record.index, entry["node"], other["server"]))
        busy = [r for r in same_pass if not is_server_restart(r)]
        busy += [r for r in earlier
                 if not is_server_restart(r) and self.surely_in_flight(r, record, entry["time"], False)]
        if len(busy) + 1 > self.timeline.params["max_parallel"]:
            self.violation("pass %d restarted client %s with %d client restarts in flight, max_parallel %d"
                           % (record.index, entry["node"], len(busy), self.timeline.params["max_parallel"]))

    def check_rates(self, rows):
        params = self.timeline.params
        started = [r for r in rows if r["state"] in EXECUTED_STATES]
        # Runs last seconds, so the hourly buckets refill by well under one token.
        for rule, rate in (("client_restart", params["client_rate"]), ("server_restart", params["server_rate"]),
                           ("node_ineligible", params["ineligible_rate"])):
            count = len([r for r in started if r["rule"] == rule])
            if count > rate_capacity(rate):
                self.violation("rule %s started %d actions, rate limit %s" % (rule, count, rate))
        capacity = rate_capacity(params["global_rate"])
        if capacity is not None and len(started) > capacity:
            self.violation("%d actions started, global rate limit %s" % (len(started), params["global_rate"]))

    def check_flapping(self, restarts, rows):
        for row in rows:
            if row["kind"] != "node_ineligible" or row["state"] not in EXECUTED_STATES:
                continue
            later = [r for r in restarts if not is_server_restart(r) and r["node"] == row["target"] and
                     r["time"] >= row["executed_at"] + 1]
            if later:
                self.violation("node %s was restarted after it was flagged as flapping" % row["target"])


def journal(db, where="1=1"):
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in con.execute("SELECT * FROM actions WHERE %s ORDER BY id" % where)]
    finally:
        con.close()


class Worker(threading.Thread):
    """Runs timelines from a queue, one at a time, on its own test server."""

    def __init__(self, jobs, results, tmp):
        super().__init__(daemon=True)
        self.jobs = jobs
        self.results = results
        self.tmp = tmp
        self.wrapper = write_server_wrapper(tmp)
        self.nomad = None

    def run(self):
        with FakeNomad() as nomad:
            self.nomad = nomad
            while True:
                try:
                    index, seed = self.jobs.get_nowait()
                except queue.Empty:
                    return
                run = Run(self, index, seed)
                try:
                    run.execute()
                except Exception as err:    # noqa: BLE001  (reported as a failed run, not lost)
                    run.violation("the run raised %r" % err)
                self.results.put(run)


class RandomTimelines(unittest.TestCase):
    def test_restart_invariants(self):
        base_seed = int(os.environ.get("RANDOM_SEED", str(int(time.time()))))
        only = os.environ.get("RANDOM_TIMELINE")
        indexes = [int(only)] if only is not None else list(range(RUNS))
        started = time.monotonic()
        tmp = tempfile.mkdtemp(prefix="restart-random-")
        self.addCleanup(shutil.rmtree, tmp, True)
        jobs = queue.Queue()
        for index in indexes:
            jobs.put((index, base_seed * 1000 + index))
        results = queue.Queue()
        workers = [Worker(jobs, results, tempfile.mkdtemp(dir=tmp)) for _ in range(min(WORKERS, len(indexes)))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        runs = []
        while not results.empty():
            runs.append(results.get())
        elapsed = time.monotonic() - started
        passes = sum(len(r.passes) for r in runs)
        totals = {name: sum(r.counts[name] for r in runs) for name in runs[0].counts} if runs else {}
        failed = sorted((r for r in runs if r.violations), key=lambda r: r.index)
        print("\nRANDOM_SEED=%d runs=%d passes=%d %s failed=%d total=%.1fs"
              % (base_seed, len(runs), passes,
                 " ".join("%s=%d" % (name.replace(" ", "_"), n) for name, n in totals.items()),
                 len(failed), elapsed), file=sys.stderr)

        self.assertEqual(len(runs), len(indexes))
        if failed:
            report = "\n\n".join("%s\n  violations:\n    %s" % (r.describe(), "\n    ".join(r.violations))
                                 for r in failed[:5])
            self.fail("%d of %d runs broke an invariant (RANDOM_SEED=%d; RANDOM_TIMELINE=<run> replays one):\n%s"
                      % (len(failed), len(runs), base_seed, report))


if __name__ == "__main__":
    unittest.main()
