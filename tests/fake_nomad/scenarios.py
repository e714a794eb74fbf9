"""Scenario builders for fake_nomad.py.

Each builder returns a scenario dict that PUT /_test/scenario (or
`fake_nomad.py --scenario-name NAME`) accepts. IDs are fixed UUIDs derived
from labels, so every run builds the same cluster.

Besides the Nomad objects, a scenario carries an "_expect" entry that the
server ignores. It records what each object was built to be, so tests can
assert exact sets instead of re-deriving them with the rule under test:

    _expect["orphans"]          [[namespace, registration ID], ...] safe to delete
    _expect["orphan_kind"]      {registration ID: "complete"|"failed"|"lost"|"absent"}
    _expect["keep"]             registrations that must never be deleted (alloc
                                pending, unknown, or running with DesiredStatus stop)
    _expect["live"]             registrations of running allocs
    _expect["terminal_allocs"]  IDs of allocs with ClientStatus complete/failed/lost
    _expect["terminal_evals"]   IDs of evals with Status complete/failed/canceled
    _expect["down_nodes"]       IDs of nodes with Status down
    _expect["gc_removed_nodes"] down nodes that `nomad system gc` removes

The restart builders (hung_client, power_loss, partition, flapping,
never_returns) add servers, host heartbeat variables and timelines, and fill:

    _expect["hung_nodes"]        down nodes whose host heartbeat is fresh and
                                 reports the agent unhealthy
    _expect["unreachable_nodes"] down nodes whose host heartbeat is stale
    _expect["restart_nodes"]     node IDs whose host agent a correct controller
                                 restarts
    _expect["restart_servers"]   Names of servers whose agent it restarts
    _expect["never_ready"]       restarted nodes whose agent never comes back
    _expect["flapping_nodes"]    nodes whose status the timeline keeps flipping
    _expect["heartbeats"]        {node ID: heartbeat variable path}
    _expect["leader"]            leader RPC address at load ("" for none;
                                 None when the scenario has no "servers")
    _expect["leader_after_restarts"]  leader once every restart_servers agent
                                 is back (None when nothing changes)
    _expect["autopilot_healthy"] autopilot health at load (None without servers)

The doctor builders (doctor_healthy and one doctor_* builder per check) add
servers with build versions, clients with reserved resources and versions,
jobs whose task groups carry disconnect settings, the scheduler
configuration and the agent's heartbeat settings, and fill:

    _expect["doctor"]            {check ID: severity} that `nomad-medic doctor`
                                 must report, and nothing else ({} when healthy)

Times are negative where they mean "that long before the scenario is loaded"
(fake_nomad resolves them): StatusUpdatedAt in seconds, CreateTime and
ModifyTime in nanoseconds. Heartbeat variables hold Unix seconds as strings
(variable items are strings), computed from now_s when the builder runs, so
load such a scenario soon after building it.
"""

import hashlib
import time

NS_PER_S = 1_000_000_000

TERMINAL_ALLOC_STATUSES = ("complete", "failed", "lost")
TERMINAL_EVAL_STATUSES = ("complete", "failed", "canceled")

# Each host's agent writes its liveness to this variable path plus its node ID.
HEARTBEAT_PREFIX = "nomad-medic/heartbeat/"
# A heartbeat this old (seconds) or newer counts as fresh in the builders.
FRESH_HEARTBEAT_AGE_S = 5
STALE_HEARTBEAT_AGE_S = 600


def stable_uuid(label):
    """Return a Nomad-shaped UUID (8-4-4-4-12 hex) derived from label."""
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()
    return "-".join((digest[0:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32]))


def registration_id(alloc_id, task, service_name, port_label):
    """Return a native service registration ID in Nomad's form."""
    return "_nomad-task-%s-%s-%s-%s" % (alloc_id, task, service_name, port_label)


def heartbeat_path(node_id):
    """Return the variable path of a host's heartbeat."""
    return HEARTBEAT_PREFIX + node_id


class ScenarioBuilder:
    """Collects nodes, allocs, evals and registrations plus the _expect record."""

    def __init__(self, label, namespaces=("default",)):
        self.label = label
        self.namespaces = list(namespaces)
        self.nodes = []
        self.allocs = []
        self.evals = []
        self.services = []
        self.servers = []
        self.variables = []
        self.timeline = []
        self.jobs = []
        self.expect = {
            "orphans": [],
            "orphan_kind": {},
            "keep": [],
            "live": [],
            "terminal_allocs": [],
            "terminal_evals": [],
            "down_nodes": [],
            "gc_removed_nodes": [],
            "hung_nodes": [],
            "unreachable_nodes": [],
            "restart_nodes": [],
            "restart_servers": [],
            "never_ready": [],
            "flapping_nodes": [],
            "heartbeats": {},
            "leader": None,
            "leader_after_restarts": None,
            "autopilot_healthy": None,
            "doctor": {},
        }

    def uuid(self, *parts):
        return stable_uuid("/".join((self.label,) + tuple(str(p) for p in parts)))

    def node(self, name, status="ready", down_for_s=None, restart=None, **fields):
        """Add a client node; restart is its "_restart" behaviour (None: fake_nomad's default).

        fields are further Node fields, such as Version or ReservedResources.
        """
        node = {"ID": self.uuid("node", name), "Name": name, "Status": status}
        node.update(fields)
        if down_for_s is not None:
            node["StatusUpdatedAt"] = -int(down_for_s)
        if restart is not None:
            node["_restart"] = dict(restart)
        if status == "down":
            self.expect["down_nodes"].append(node["ID"])
        self.nodes.append(node)
        return node

    def server(self, name, status="alive", leader=False, healthy=True, voter=True, node=None,
               restart=None, **fields):
        """Add a server at 10.0.0.<n>:4647; node is the client node sharing its host, if any.

        fields are further server keys, such as Version or in_raft.
        """
        server = {"Name": name, "Addr": "10.0.0.%d" % (len(self.servers) + 1), "Port": 4647,
                  "Status": status, "Voter": voter, "Healthy": healthy, "Leader": leader}
        server.update(fields)
        if node is not None:
            server["node_id"] = node["ID"]
        if restart is not None:
            server["_restart"] = dict(restart)
        self.servers.append(server)
        return server

    def heartbeat(self, node, now_s, age_s, agent_healthy, message):
        """Add the host heartbeat variable of node, written age_s seconds before now_s."""
        path = heartbeat_path(node["ID"])
        self.variables.append({
            "Namespace": "default",
            "Path": path,
            "Items": {
                "host_alive_at": str(int(now_s) - int(age_s)),
                "agent_healthy": "true" if agent_healthy else "false",
                "agent_message": message,
            },
        })
        self.expect["heartbeats"][node["ID"]] = path
        return path

    def job(self, namespace, job_id, groups=None, **fields):
        """Add a job; groups are partial TaskGroups (default: one group named after the job)."""
        job = {"ID": job_id, "Namespace": namespace}
        if groups is not None:
            job["TaskGroups"] = [dict(group) for group in groups]
        job.update(fields)
        self.jobs.append(job)
        return job

    def at(self, op, at_s=None, at_tick=None):
        """Add a timeline entry that applies the mutate operation op at at_s or at_tick."""
        entry = {"op": dict(op)}
        if at_s is not None:
            entry["at_s"] = at_s
        if at_tick is not None:
            entry["at_tick"] = at_tick
        self.timeline.append(entry)
        return entry

    def expect_cluster(self):
        """Record the leader and autopilot health that the servers give at load."""
        if not self.servers:
            return
        leader = [s for s in self.servers if s["Leader"] and s["Status"] == "alive"]
        self.expect["leader"] = "%s:%d" % (leader[0]["Addr"], leader[0]["Port"]) if leader else ""
        members = [s for s in self.servers if s["Status"] != "left"]
        self.expect["autopilot_healthy"] = all(s["Status"] == "alive" and s["Healthy"]
                                               for s in members)

    def alloc(self, namespace, job_id, node, client_status, desired_status="run",
              label=None, job_type="service", finished_ago_s=600):
        alloc_id = self.uuid("alloc", namespace, job_id, label or len(self.allocs))
        alloc = {
            "ID": alloc_id,
            "Namespace": namespace,
            "NodeID": node["ID"],
            "JobID": job_id,
            "JobType": job_type,
            "TaskGroup": job_id,
            "ClientStatus": client_status,
            "DesiredStatus": desired_status,
            "CreateTime": -3 * 3600 * NS_PER_S,
        }
        if client_status in TERMINAL_ALLOC_STATUSES:
            alloc["ModifyTime"] = -int(finished_ago_s) * NS_PER_S
            self.expect["terminal_allocs"].append(alloc_id)
        self.allocs.append(alloc)
        return alloc

    def register(self, namespace, alloc_id, node, task, service_name, port_label, role,
                 tags=(), kind=None):
        """Add a registration whose role is "live", "keep" or "orphan" (kind names the orphan case)."""
        reg = {
            "ID": registration_id(alloc_id, task, service_name, port_label),
            "ServiceName": service_name,
            "Namespace": namespace,
            "AllocID": alloc_id,
            "NodeID": node["ID"],
            "Tags": list(tags),
        }
        self.services.append(reg)
        key = [namespace, reg["ID"]]
        if role == "orphan":
            self.expect["orphans"].append(key)
            self.expect["orphan_kind"][reg["ID"]] = kind
        elif role == "keep":
            self.expect["keep"].append(key)
        else:
            self.expect["live"].append(key)
        return reg

    def evaluation(self, namespace, job_id, status, label):
        evaluation = {
            "ID": self.uuid("eval", namespace, job_id, label),
            "Namespace": namespace,
            "JobID": job_id,
            "Status": status,
            "TriggeredBy": "job-register" if status != "canceled" else "alloc-failure",
            "CreateTime": -2 * 3600 * NS_PER_S,
            "ModifyTime": -2 * 3600 * NS_PER_S + NS_PER_S,
        }
        if status in TERMINAL_EVAL_STATUSES:
            self.expect["terminal_evals"].append(evaluation["ID"])
        self.evals.append(evaluation)
        return evaluation

    def finish_gc_expectation(self):
        """Record which down nodes a forced GC removes: those whose allocs are all terminal."""
        for node_id in self.expect["down_nodes"]:
            live = [a for a in self.allocs
                    if a["NodeID"] == node_id and a["ClientStatus"] not in TERMINAL_ALLOC_STATUSES]
            if not live:
                self.expect["gc_removed_nodes"].append(node_id)

    def build(self, **settings):
        self.finish_gc_expectation()
        self.expect_cluster()
        scenario = {
            "region": "global",
            "namespaces": list(self.namespaces),
            "nodes": self.nodes,
            "allocations": self.allocs,
            "evaluations": self.evals,
            "services": self.services,
            "_expect": self.expect,
        }
        if self.servers:
            scenario["servers"] = self.servers
        if self.variables:
            scenario["variables"] = self.variables
        if self.timeline:
            scenario["timeline"] = self.timeline
        if self.jobs:
            scenario["jobs"] = self.jobs
        scenario.update(settings)
        return scenario


# Services the builders place: (job, task, service name, port label, tags).
# Names contain '-' on purpose, as real ones do, to exercise ID parsing.
WEB = ("web", "frontend", "web-http", "http", ("public", "v2"))
BILLING = ("billing", "api", "billing-api", "grpc", ("internal",))
CACHE = ("cache", "redis", "cache-redis", "db", ("cache", "db"))
REPORTS = ("reports", "worker", "reports-worker", "metrics", ())


def add_service_alloc(builder, namespace, spec, node, client_status, role,
                      desired_status="run", kind=None, label=None):
    job_id, task, service_name, port_label, tags = spec
    alloc = builder.alloc(namespace, job_id, node, client_status, desired_status,
                          label=label or "%s-%s" % (client_status, desired_status))
    builder.register(namespace, alloc["ID"], node, task, service_name, port_label, role,
                     tags=tags, kind=kind)
    return alloc


def two_namespaces(down_node=False, disconnected_node=True, live_per_namespace=2,
                   terminal_evals_per_namespace=3, acl_token=None):
    """Two namespaces ("default", "prod") with live, orphaned and protected registrations.

    Each namespace gets live_per_namespace running allocs with registrations
    and four orphans: alloc complete, failed, lost, and absent from the alloc
    table. It also gets protected registrations whose alloc is pending, or
    running with DesiredStatus stop, or (with disconnected_node) unknown on a
    disconnected node. A complete batch alloc without registrations, terminal
    evals, and one blocked and one pending eval complete each namespace.
    The cluster has four ready nodes. down_node adds a node that has been down
    for two hours and carries the lost allocs.
    """
    builder = ScenarioBuilder("two_namespaces", namespaces=("default", "prod"))
    ready = [builder.node("client-%d" % (i + 1)) for i in range(4)]
    disconnected = builder.node("client-5", status="disconnected") if disconnected_node else None
    down = builder.node("client-6", status="down", down_for_s=7200) if down_node else None

    for namespace in builder.namespaces:
        for i in range(live_per_namespace):
            spec = WEB if i % 2 == 0 else BILLING
            add_service_alloc(builder, namespace, spec, ready[i % 4], "running", "live",
                              label="live-%d" % i)

    for namespace in builder.namespaces:
        add_service_alloc(builder, namespace, REPORTS, ready[0], "complete", "orphan",
                          desired_status="stop", kind="complete")
        add_service_alloc(builder, namespace, BILLING, ready[1], "failed", "orphan",
                          kind="failed")
        add_service_alloc(builder, namespace, WEB, down or ready[2], "lost", "orphan",
                          desired_status="stop", kind="lost")
        # An alloc that was garbage-collected while its registration leaked.
        gone_id = builder.uuid("alloc", namespace, "cache", "garbage-collected")
        builder.register(namespace, gone_id, ready[3], CACHE[1], CACHE[2], CACHE[3], "orphan",
                         tags=CACHE[4], kind="absent")

    for namespace in builder.namespaces:
        add_service_alloc(builder, namespace, CACHE, ready[3], "pending", "keep")
        add_service_alloc(builder, namespace, WEB, ready[0], "running", "keep",
                          desired_status="stop")
        if disconnected is not None:
            add_service_alloc(builder, namespace, BILLING, disconnected, "unknown", "keep")
        builder.alloc(namespace, "nightly-export", ready[1], "complete", label="batch",
                      job_type="batch", finished_ago_s=5400)

    for namespace in builder.namespaces:
        for i in range(terminal_evals_per_namespace):
            status = TERMINAL_EVAL_STATUSES[i % len(TERMINAL_EVAL_STATUSES)]
            builder.evaluation(namespace, "web", status, "terminal-%d" % i)
        builder.evaluation(namespace, "billing", "blocked", "blocked")
        builder.evaluation(namespace, "cache", "pending", "pending")

    settings = {}
    if acl_token is not None:
        settings["acl_token"] = acl_token
    return builder.build(**settings)


def gc_pileup(terminal_allocs=50, terminal_evals=100, down_node=False):
    """A healthy cluster plus a pile of terminal allocs and evals waiting for GC.

    Terminal allocs alternate complete and failed (batch job, no registrations).
    With down_node, the first two terminal allocs are lost allocs on a node
    that has been down for two hours, so a forced GC removes that node too.
    """
    builder = ScenarioBuilder("gc_pileup")
    ready = [builder.node("client-%d" % (i + 1)) for i in range(4)]
    down = builder.node("client-5", status="down", down_for_s=7200) if down_node else None

    for i, spec in enumerate((WEB, BILLING, CACHE)):
        add_service_alloc(builder, "default", spec, ready[i], "running", "live")

    for i in range(terminal_allocs):
        if down is not None and i < 2:
            builder.alloc("default", "nightly-export", down, "lost", desired_status="stop",
                          label="lost-%d" % i, job_type="batch")
            continue
        status = "complete" if i % 2 == 0 else "failed"
        builder.alloc("default", "nightly-export", ready[i % 4], status,
                      label="terminal-%d" % i, job_type="batch",
                      finished_ago_s=3600 + i)

    for i in range(terminal_evals):
        status = TERMINAL_EVAL_STATUSES[i % len(TERMINAL_EVAL_STATUSES)]
        builder.evaluation("default", "nightly-export", status, "terminal-%d" % i)
    return builder.build()


def healthy():
    """Four ready nodes, three running service allocs with registrations, two complete evals."""
    builder = ScenarioBuilder("healthy")
    ready = [builder.node("client-%d" % (i + 1)) for i in range(4)]
    for i, spec in enumerate((WEB, BILLING, CACHE)):
        add_service_alloc(builder, "default", spec, ready[i], "running", "live")
    builder.evaluation("default", "web", "complete", "register")
    builder.evaluation("default", "billing", "complete", "register")
    return builder.build()


# --- restart orchestration: servers, host heartbeats, timelines -------------


def three_servers(builder, leader="server-1", failed=(), unhealthy=()):
    """Add server-1..3; leader is the Name marked Leader ("" for none)."""
    for i in range(3):
        name = "server-%d" % (i + 1)
        builder.server(name, status="failed" if name in failed else "alive",
                       leader=name == leader, healthy=name not in unhealthy)


def ready_clients(builder, count, now_s, first=1):
    """Add count ready clients with fresh, healthy host heartbeats and return them."""
    nodes = []
    for i in range(count):
        node = builder.node("client-%d" % (first + i))
        builder.heartbeat(node, now_s, FRESH_HEARTBEAT_AGE_S, True, "ok")
        nodes.append(node)
    return nodes


def hung_client_node(builder, name, now_s, restart=None, down_for_s=120):
    """Add a down client whose host is up (fresh heartbeat) but whose agent is wedged."""
    node = builder.node(name, status="down", down_for_s=down_for_s, restart=restart)
    builder.heartbeat(node, now_s, FRESH_HEARTBEAT_AGE_S, False,
                      "nomad agent is running but has not heartbeated to the servers for %ds"
                      % down_for_s)
    builder.expect["hung_nodes"].append(node["ID"])
    builder.expect["restart_nodes"].append(node["ID"])
    return node


def add_running_services(builder, nodes):
    for i, spec in enumerate((WEB, BILLING, CACHE)):
        add_service_alloc(builder, "default", spec, nodes[i % len(nodes)], "running", "live")


def hung_client(now_s=None):
    """Three healthy servers (server-1 leads), four ready clients and one hung client.

    client-5 has been down for two minutes while its host heartbeat is fresh
    and reports the agent unhealthy, so restarting that agent is the fix.
    """
    now_s = time.time() if now_s is None else now_s
    builder = ScenarioBuilder("hung_client")
    three_servers(builder)
    ready = ready_clients(builder, 4, now_s)
    hung_client_node(builder, "client-5", now_s)
    add_running_services(builder, ready)
    return builder.build()


def power_loss(now_s=None):
    """The site lost power and the hosts are back, but Nomad is not.

    server-1's agent serves the API, but its gossip view shows server-2 and
    server-3 failed, so there is no quorum and no leader. All six clients are down while their
    hosts heartbeat fresh with the agent unhealthy. Restarting server-2 or
    server-3 restores a quorum and fake_nomad then elects server-1;
    restarting the clients brings them back.
    """
    now_s = time.time() if now_s is None else now_s
    builder = ScenarioBuilder("power_loss")
    three_servers(builder, leader="", failed=("server-2", "server-3"))
    for i in range(6):
        node = builder.node("client-%d" % (i + 1), status="down", down_for_s=300)
        builder.heartbeat(node, now_s, FRESH_HEARTBEAT_AGE_S, False,
                          "no servers available: agent cannot reach any Nomad server")
        builder.expect["hung_nodes"].append(node["ID"])
        builder.expect["restart_nodes"].append(node["ID"])
    builder.expect["restart_servers"] = ["server-2", "server-3"]
    builder.expect["leader_after_restarts"] = "10.0.0.1:4647"
    return builder.build()


def partition(now_s=None, down=5, ready=3):
    """A network partition: many clients went down at the same moment.

    server-1 still leads but lags (unhealthy) and server-3 is failed, so
    autopilot reports unhealthy (429). The down clients' host heartbeats are
    ten minutes old because their hosts cannot reach the cluster either, so a
    restart cannot help and no agent should be restarted.
    """
    now_s = time.time() if now_s is None else now_s
    builder = ScenarioBuilder("partition")
    three_servers(builder, failed=("server-3",), unhealthy=("server-1",))
    ready_nodes = ready_clients(builder, ready, now_s)
    for i in range(down):
        node = builder.node("client-%d" % (ready + i + 1), status="down", down_for_s=90)
        builder.heartbeat(node, now_s, STALE_HEARTBEAT_AGE_S, True, "ok")
        builder.expect["unreachable_nodes"].append(node["ID"])
    add_running_services(builder, ready_nodes)
    return builder.build()


def flapping(cycles=3, period_s=None, now_s=None):
    """client-5 goes down and comes back `cycles` times; it ends ready.

    The changes happen at ticks 1, 2, ..., 2*cycles, or every period_s
    seconds when period_s is given. Its host heartbeat stays fresh and
    healthy, so the node recovers on its own and needs no restart.
    """
    now_s = time.time() if now_s is None else now_s
    builder = ScenarioBuilder("flapping")
    three_servers(builder)
    ready_clients(builder, 4, now_s)
    node = ready_clients(builder, 1, now_s, first=5)[0]
    for step in range(2 * cycles):
        status = "down" if step % 2 == 0 else "ready"
        op = {"op": "set_node_status", "id": node["ID"], "status": status}
        if period_s is None:
            builder.at(op, at_tick=step + 1)
        else:
            builder.at(op, at_s=round(period_s * (step + 1), 3))
    builder.expect["flapping_nodes"].append(node["ID"])
    return builder.build()


def never_returns(now_s=None):
    """hung_client, except that client-5's agent never comes back after a restart."""
    now_s = time.time() if now_s is None else now_s
    builder = ScenarioBuilder("never_returns")
    three_servers(builder)
    ready = ready_clients(builder, 4, now_s)
    hung = hung_client_node(builder, "client-5", now_s, restart={"never": True})
    builder.expect["never_ready"].append(hung["ID"])
    add_running_services(builder, ready)
    return builder.build()


# --- doctor: configuration checks ------------------------------------------

# A release with none of the known bugs the doctor checks for: it has the
# native service fixes (1.8.0), keeps IPAM leases in /var/run/cni (1.9.4) and
# keeps registrations when a node goes down (1.10.4).
DOCTOR_VERSION = "1.10.5"
# Reserved resources on every healthy client: CPU in MHz, memory in MB.
RESERVED_CPU_MHZ = 500
RESERVED_MEMORY_MB = 512


def seconds(value):
    """Return value seconds as Go duration nanoseconds, the wire form of job durations."""
    return int(value * NS_PER_S)


def reserved(cpu_mhz=RESERVED_CPU_MHZ, memory_mb=RESERVED_MEMORY_MB):
    """Return a Node.ReservedResources object with the given CPU and memory."""
    return {"Cpu": {"CpuShares": cpu_mhz}, "Memory": {"MemoryMB": memory_mb},
            "Disk": {"DiskMB": 0}, "Networks": {"ReservedHostPorts": "22"}}


def doctor_builder(label, servers=3, clients=4, server_version=DOCTOR_VERSION,
                   client_version=DOCTOR_VERSION):
    """Return a builder holding a cluster the doctor finds healthy.

    servers servers (server-1 leads) at 10.0.0.<n>, clients ready clients
    with reserved CPU and memory, and three jobs: "web" with
    disconnect { lost_after = "10m" }, "billing" in namespace "prod" without
    a disconnect block, and the batch job "nightly-export".
    """
    builder = ScenarioBuilder(label, namespaces=("default", "prod"))
    for i in range(servers):
        builder.server("server-%d" % (i + 1), leader=i == 0, Version=server_version)
    for i in range(clients):
        builder.node("client-%d" % (i + 1), Version=client_version, ReservedResources=reserved())
    builder.job("default", "web", [{"Name": "frontend", "Count": 3,
                                    "Disconnect": {"LostAfter": seconds(600), "Replace": True,
                                                   "Reconcile": "best_score"}}])
    builder.job("prod", "billing", [{"Name": "api", "Count": 2}])
    builder.job("default", "nightly-export", [{"Name": "export"}], Type="batch")
    return builder


def heartbeat_settings(grace=None, min_ttl=None, max_per_second=None):
    """Return an agent_self override with the server block's heartbeat settings.

    Each value is sent as given: integer nanoseconds or a Go duration string
    for the durations, a number for the rate; None leaves the field at 0.
    """
    server = {}
    if grace is not None:
        server["HeartbeatGrace"] = grace
    if min_ttl is not None:
        server["MinHeartbeatTTL"] = min_ttl
    if max_per_second is not None:
        server["MaxHeartbeatsPerSecond"] = max_per_second
    return {"config": {"Server": server}}


def doctor_healthy():
    """Three servers, four clients with reserved resources, safe disconnect settings.

    The agent reports its heartbeat settings explicitly, grace in nanoseconds
    and the TTL floor as a string, so both wire forms are read.
    """
    builder = doctor_builder("doctor_healthy")
    return builder.build(agent_self=heartbeat_settings(grace=seconds(10), min_ttl="10s",
                                                       max_per_second=50.0))


def doctor_colocated():
    """client-1 runs on server-1's host (same address)."""
    builder = doctor_builder("doctor_colocated")
    client = builder.nodes[0]
    client["HTTPAddr"] = "%s:4646" % builder.servers[0]["Addr"]
    builder.servers[0]["node_id"] = client["ID"]
    builder.expect["doctor"] = {"colocated_server_client": "warning"}
    return builder.build()


def doctor_no_reserved(oversubscription=False):
    """client-2 reserves no memory and client-3 reserves nothing.

    With oversubscription, the scheduler lets tasks use memory beyond their
    reservation, which makes the finding critical.
    """
    builder = doctor_builder("doctor_no_reserved")
    builder.nodes[1]["ReservedResources"] = reserved(memory_mb=0)
    builder.nodes[2]["ReservedResources"] = reserved(cpu_mhz=0, memory_mb=0)
    severity = "critical" if oversubscription else "warning"
    builder.expect["doctor"] = {"client_reserved_missing": severity}
    return builder.build(scheduler={"MemoryOversubscriptionEnabled": oversubscription})


def doctor_servers(count):
    """count servers: fewer than three, or an even number (one check each)."""
    builder = doctor_builder("doctor_servers_%d" % count, servers=count)
    check = "servers_too_few" if count < 3 else "servers_even"
    builder.expect["doctor"] = {check: "critical" if count < 3 else "warning"}
    return builder.build()


def doctor_raft_missing():
    """server-3 is alive in gossip but not in the Raft configuration."""
    builder = doctor_builder("doctor_raft_missing")
    builder.servers[2]["in_raft"] = False
    builder.expect["doctor"] = {"raft_missing_server": "critical"}
    return builder.build()


def doctor_autopilot_unhealthy():
    """server-2 is alive but unhealthy, so autopilot answers 429."""
    builder = doctor_builder("doctor_autopilot_unhealthy")
    builder.servers[1]["Healthy"] = False
    builder.expect["doctor"] = {"autopilot_unhealthy": "critical"}
    return builder.build()


def doctor_stop_on_client():
    """Job "ingest" stops its allocations after an hour without servers.

    The window is long, so only the stop_on_client_after check applies.
    """
    builder = doctor_builder("doctor_stop_on_client")
    builder.job("default", "ingest", [{"Name": "consumer",
                                       "Disconnect": {"StopOnClientAfter": seconds(3600)}}])
    builder.expect["doctor"] = {"group_stops_on_disconnect": "warning"}
    return builder.build()


def doctor_deprecated_fields():
    """Job "legacy" uses max_client_disconnect and prevent_reschedule_on_lost only.

    The servers run 1.10.5, which ignores both, so the finding is critical.
    """
    builder = doctor_builder("doctor_deprecated_fields")
    builder.job("default", "legacy", [{"Name": "worker", "MaxClientDisconnect": seconds(3600),
                                       "PreventRescheduleOnLost": True}])
    builder.expect["doctor"] = {"deprecated_disconnect_fields": "critical"}
    return builder.build()


def doctor_versions(server_version=DOCTOR_VERSION, client_version=DOCTOR_VERSION):
    """Servers and clients on the given versions (a known bug when either is affected)."""
    builder = doctor_builder("doctor_versions", server_version=server_version,
                             client_version=client_version)
    builder.expect["doctor"] = {"nomad_version_bug": "warning"}
    return builder.build()


def doctor_unknown_version():
    """client-4 reports no Nomad version, so the known bugs cannot be ruled out."""
    builder = doctor_builder("doctor_unknown_version")
    builder.nodes[3]["Version"] = ""
    builder.expect["doctor"] = {"nomad_version_unknown": "info"}
    return builder.build()


def doctor_short_window(lost_after_s=30, max_heartbeats_per_second=None, clients=4):
    """Job "cache" sets disconnect { lost_after } shorter than heartbeat loss can take.

    The doctor asks for two worst-case TTLs plus heartbeat_grace: with
    defaults 2 x 20 s + 10 s = 50 s, so 30 s is too short. A low
    max_heartbeats_per_second stretches the TTL with the cluster size: 0.1 per
    second with 4 live nodes gives a 40 s TTL before the stagger (up to 80 s
    with it), so the window must be 170 s and even 2 minutes is too short.
    """
    builder = doctor_builder("doctor_short_window", clients=clients)
    builder.job("default", "cache", [{"Name": "redis",
                                      "Disconnect": {"LostAfter": seconds(lost_after_s)}}])
    builder.expect["doctor"] = {"disconnect_window_short": "warning"}
    settings = {}
    if max_heartbeats_per_second is not None:
        settings["agent_self"] = heartbeat_settings(max_per_second=max_heartbeats_per_second)
    return builder.build(**settings)


# --- reading a scenario's expectations ------------------------------------


def expected(scenario):
    """Return the scenario's _expect record."""
    return scenario["_expect"]


def orphan_ids(scenario):
    """Return {(namespace, registration ID)} that are safe to delete."""
    return {tuple(key) for key in scenario["_expect"]["orphans"]}


def protected_ids(scenario):
    """Return {(namespace, registration ID)} that must never be deleted (live and keep)."""
    record = scenario["_expect"]
    return {tuple(key) for key in record["live"] + record["keep"]}


def registration(scenario, namespace, reg_id):
    """Return the scenario's registration dict for (namespace, reg_id)."""
    for reg in scenario["services"]:
        if reg["Namespace"] == namespace and reg["ID"] == reg_id:
            return reg
    raise KeyError("no registration %s in namespace %s" % (reg_id, namespace))


# Names accepted by `fake_nomad.py --scenario-name`.
SCENARIOS = {
    "empty": lambda: {},
    "healthy": healthy,
    "two_namespaces": two_namespaces,
    "two_namespaces_down_node": lambda: two_namespaces(down_node=True),
    "gc_pileup": gc_pileup,
    "gc_pileup_down_node": lambda: gc_pileup(down_node=True),
    "hung_client": hung_client,
    "power_loss": power_loss,
    "partition": partition,
    "flapping": flapping,
    "never_returns": never_returns,
    "doctor_healthy": doctor_healthy,
    "doctor_colocated": doctor_colocated,
    "doctor_no_reserved": doctor_no_reserved,
    "doctor_deprecated_fields": doctor_deprecated_fields,
    "doctor_short_window": doctor_short_window,
}
