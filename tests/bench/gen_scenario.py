#!/usr/bin/env python3
"""Generate the benchmark cluster for tests/fake_nomad/fake_nomad.py.

At scale 1 the cluster has 5,000 nodes, 100,000 allocations in three
namespaces, 50,000 native service registrations in about 15,000 (namespace,
service) pairs, and 5 % of the registrations orphaned: their allocation is
client-terminal (complete, failed or lost) or absent from the cluster. Every
other registration belongs to a running allocation. Scale 2 doubles every
count; scale 0.01 is the smoke size. The same seed and scale always give the
same bytes.

The shape follows a real cluster:
- Service jobs register one to three services, each as a group service
  (`_nomad-task-<alloc>-group-<group>-<service>-<port>`) or a task service
  (`_nomad-task-<alloc>-<task>-<service>-<port>`), once per allocation.
- An orphan is an older allocation of such a job whose registrations were
  never removed. About 60 % of these allocations are still listed as
  complete, failed or lost, and 40 % were garbage-collected (absent).
- The allocations left to reach the total are terminal allocations of
  earlier job versions (their registrations were removed, as they should
  be) and batch allocations without services.
- 0.2 % of the nodes are down; the lost allocations sit on them.
- One evaluation per 20 allocations, mostly complete.

Besides the Nomad objects, the output contains "_bench", which the server
ignores because the key starts with "_". It records the seed, the scale, the
counts, the sorted (namespace, service) pairs and the expected orphans.

Usage:
    gen_scenario.py [--scale 1] [--seed 20240601] [--output FILE]
"""

import argparse
import json
import random
import sys
import uuid

NS_PER_S = 1_000_000_000

BASE_NODES = 5_000
BASE_ALLOCATIONS = 100_000
BASE_REGISTRATIONS = 50_000
BASE_PAIRS = 15_000
ORPHAN_SHARE = 0.05
ABSENT_SHARE = 0.40          # of orphaned allocations; the rest are listed as terminal
DOWN_NODE_SHARE = 0.002
ALLOCATIONS_PER_EVAL = 20

# Namespace name and its share of the services.
NAMESPACES = (("prod", 0.5), ("default", 0.3), ("staging", 0.2))
DATACENTERS = ("dc1", "dc2", "dc3")

# Service names are <team>-<app>-<kind>, with a numeric suffix once the words run out.
TEAMS = ("payments", "checkout", "search", "catalog", "billing", "identity", "ledger",
         "shipping", "pricing", "reviews", "media", "notify", "audit", "fraud", "inventory",
         "orders", "profile", "session", "gateway", "reports", "ads", "recs", "maps",
         "support", "chat", "feeds", "export", "import", "metrics", "tracing")
APPS = ("api", "web", "worker", "cron", "cache", "db", "queue", "proxy", "router", "indexer",
        "scheduler", "ingest", "stream", "store", "admin", "auth", "edge", "sync", "batch",
        "render", "upload", "resize", "mailer", "sms", "push", "ledger", "quota", "limits",
        "webhook", "graph", "query", "loader", "pricer", "matcher", "scorer", "ranker",
        "crawler", "parser", "archiver", "janitor")
KINDS = ("http", "grpc", "metrics", "admin", "ws", "internal", "public", "health")
PORT_LABELS = ("http", "grpc", "metrics", "admin", "api")

# How many allocations a service job runs, and how often (weights). Mean is about 3.4.
JOB_COUNTS = ((1, 30), (2, 25), (3, 20), (5, 15), (10, 7), (20, 3))
SERVICES_PER_JOB = ((1, 50), (2, 35), (3, 15))


def new_id(rng):
    """Return a random version-4 UUID string, as Nomad's uuid.Generate makes them."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def weighted(rng, table):
    values = [value for value, _ in table]
    weights = [weight for _, weight in table]
    return rng.choices(values, weights=weights)[0]


def ago_ns(seconds):
    """A time that many seconds before the server loads the scenario (negative, as fake_nomad reads it)."""
    return -int(seconds * NS_PER_S)


class Generator:
    def __init__(self, scale, seed):
        if scale <= 0:
            raise ValueError("scale must be positive, got %r" % scale)
        self.scale = scale
        self.seed = seed
        self.rng = random.Random(seed)
        self.n_nodes = max(3, round(BASE_NODES * scale))
        self.n_allocs = max(10, round(BASE_ALLOCATIONS * scale))
        self.n_regs = max(10, round(BASE_REGISTRATIONS * scale))
        self.n_pairs = max(3, round(BASE_PAIRS * scale))
        self.nodes = []
        self.ready_nodes = []
        self.down_nodes = []
        self.allocs = []
        self.regs = []
        self.evals = []
        self.jobs = []
        self.orphans = []
        self.used_names = {ns: set() for ns, _ in NAMESPACES}

    # -- nodes -------------------------------------------------------------

    def make_nodes(self):
        n_down = max(1, round(self.n_nodes * DOWN_NODE_SHARE))
        for i in range(self.n_nodes):
            dc = DATACENTERS[i % len(DATACENTERS)]
            node = {"ID": new_id(self.rng), "Name": "nomad-client-%s-%05d" % (dc, i + 1),
                    "Datacenter": dc, "Status": "ready"}
            self.nodes.append(node)
        for node in self.rng.sample(self.nodes, n_down):
            node["Status"] = "down"
            node["StatusUpdatedAt"] = -self.rng.randint(600, 6 * 3600)
            node["SchedulingEligibility"] = "ineligible"
        self.ready_nodes = [n for n in self.nodes if n["Status"] == "ready"]
        self.down_nodes = [n for n in self.nodes if n["Status"] == "down"]

    # -- services and jobs ---------------------------------------------------

    def service_name(self, namespace):
        used = self.used_names[namespace]
        while True:
            name = "%s-%s-%s" % (self.rng.choice(TEAMS), self.rng.choice(APPS), self.rng.choice(KINDS))
            if name in used:
                name = "%s-%d" % (name, self.rng.randint(2, 99))
            if name not in used:
                used.add(name)
                return name

    def make_jobs(self):
        """Create service jobs until their services make n_pairs (namespace, service) pairs."""
        pairs = 0
        while pairs < self.n_pairs:
            namespace = weighted(self.rng, NAMESPACES)
            k = min(weighted(self.rng, SERVICES_PER_JOB), self.n_pairs - pairs)
            services = []
            for _ in range(k):
                name = self.service_name(namespace)
                group_service = self.rng.random() < 0.5
                services.append((name, self.rng.choice(PORT_LABELS), group_service))
            job_id = services[0][0].rsplit("-", 1)[0] + "-" + new_id(self.rng)[:4]
            self.jobs.append({"namespace": namespace, "id": job_id, "group": "app",
                              "task": self.rng.choice(("server", "app", "main")),
                              "services": services, "count": weighted(self.rng, JOB_COUNTS),
                              "version": self.rng.randint(0, 12)})
            pairs += k

    def fit_counts(self, live_regs):
        """Adjust job counts so the live allocations register exactly live_regs registrations."""
        total = sum(job["count"] * len(job["services"]) for job in self.jobs)
        singles = [job for job in self.jobs if len(job["services"]) == 1]
        while total != live_regs:
            if total < live_regs:
                job = self.rng.choice(self.jobs)
                step = len(job["services"])
                if total + step > live_regs:
                    job = self.rng.choice(singles)
                    step = 1
                job["count"] += 1
                total += step
            else:
                job = self.rng.choice(self.jobs)
                step = len(job["services"])
                if job["count"] <= 1 or total - step < live_regs:
                    job = self.rng.choice(singles)
                    step = 1
                    if job["count"] <= 1:
                        continue
                job["count"] -= 1
                total -= step

    # -- allocations and registrations ---------------------------------------

    def alloc(self, job, node, client_status, desired, job_type="service", age_s=None):
        age_s = age_s if age_s is not None else self.rng.randint(3600, 30 * 86400)
        alloc = {
            "ID": new_id(self.rng),
            "Namespace": job["namespace"],
            "NodeID": node["ID"],
            "JobID": job["id"],
            "JobType": job_type,
            "JobVersion": job["version"],
            "TaskGroup": job["group"],
            "Name": "%s.%s[%d]" % (job["id"], job["group"], self.rng.randint(0, max(job["count"] - 1, 0))),
            "ClientStatus": client_status,
            "DesiredStatus": desired,
            "CreateTime": ago_ns(age_s),
        }
        if client_status in ("complete", "failed", "lost"):
            alloc["ModifyTime"] = ago_ns(self.rng.randint(60, age_s))
        return alloc

    def register(self, job, alloc, node):
        regs = []
        for name, port, group_service in job["services"]:
            owner = "group-%s" % job["group"] if group_service else job["task"]
            regs.append({
                "ID": "_nomad-task-%s-%s-%s-%s" % (alloc["ID"], owner, name, port),
                "ServiceName": name,
                "Namespace": job["namespace"],
                "AllocID": alloc["ID"],
                "NodeID": node["ID"],
                "JobID": job["id"],
                "Datacenter": node["Datacenter"],
                "Tags": [port, "v%d" % job["version"]],
            })
        return regs

    def make_orphans(self, orphan_regs):
        """Add older allocations whose registrations leaked until they hold orphan_regs registrations."""
        made = 0
        singles = [job for job in self.jobs if len(job["services"]) == 1]
        while made < orphan_regs:
            job = self.rng.choice(self.jobs)
            if made + len(job["services"]) > orphan_regs:
                job = self.rng.choice(singles)
            absent = self.rng.random() < ABSENT_SHARE
            status = self.rng.choice(("complete", "failed", "lost"))
            node = self.rng.choice(self.down_nodes if status == "lost" else self.ready_nodes)
            desired = "stop" if status == "lost" else "run"
            alloc = self.alloc(job, node, status, desired, age_s=self.rng.randint(3600, 3 * 86400))
            kind = "absent" if absent else status
            if not absent:
                self.allocs.append(alloc)
            for reg in self.register(job, alloc, node):
                self.regs.append(reg)
                self.orphans.append([reg["Namespace"], reg["ID"], kind])
                made += 1

    def make_live(self):
        for job in self.jobs:
            for _ in range(job["count"]):
                node = self.rng.choice(self.ready_nodes)
                alloc = self.alloc(job, node, "running", "run")
                self.allocs.append(alloc)
                self.regs.extend(self.register(job, alloc, node))

    def make_filler(self):
        """Fill up to n_allocs with earlier terminal versions and batch allocations, none registered."""
        batch_jobs = []
        for i in range(max(1, len(self.jobs) // 10)):
            namespace = weighted(self.rng, NAMESPACES)
            batch_jobs.append({"namespace": namespace, "id": "batch-%s-%04d" % (self.rng.choice(TEAMS), i),
                               "group": "run", "task": "run", "services": [], "count": 1,
                               "version": self.rng.randint(0, 5)})
        while len(self.allocs) < self.n_allocs:
            if self.rng.random() < 0.6:
                job = self.rng.choice(self.jobs)
                status = weighted(self.rng, (("complete", 70), ("failed", 25), ("lost", 5)))
                node = self.rng.choice(self.down_nodes if status == "lost" else self.ready_nodes)
                desired = "stop" if status == "lost" else self.rng.choice(("run", "stop"))
                self.allocs.append(self.alloc(job, node, status, desired))
            else:
                job = self.rng.choice(batch_jobs)
                status = weighted(self.rng, (("complete", 80), ("running", 15), ("failed", 5)))
                node = self.rng.choice(self.ready_nodes)
                self.allocs.append(self.alloc(job, node, status, "run", job_type="batch"))

    def make_evals(self):
        jobs = self.jobs
        for _ in range(max(1, len(self.allocs) // ALLOCATIONS_PER_EVAL)):
            job = self.rng.choice(jobs)
            status = weighted(self.rng, (("complete", 90), ("failed", 3), ("canceled", 2), ("blocked", 5)))
            self.evals.append({"ID": new_id(self.rng), "Namespace": job["namespace"], "JobID": job["id"],
                               "Type": "service", "Status": status,
                               "TriggeredBy": self.rng.choice(("job-register", "node-update",
                                                               "alloc-failure", "deployment-watcher")),
                               "CreateTime": ago_ns(self.rng.randint(60, 3600))})

    def build(self):
        self.make_nodes()
        self.make_jobs()
        orphan_regs = round(self.n_regs * ORPHAN_SHARE)
        self.fit_counts(self.n_regs - orphan_regs)
        self.make_live()
        self.make_orphans(orphan_regs)
        if len(self.allocs) > self.n_allocs:
            raise ValueError("scale %r: the service allocations alone (%d) exceed the allocation "
                             "total %d; use a larger scale" % (self.scale, len(self.allocs), self.n_allocs))
        self.make_filler()
        self.make_evals()
        # Nomad assigns CreateIndex in creation order; shuffling keeps live and orphan
        # allocations interleaved across the list's pages, as in a cluster that grew over time.
        self.rng.shuffle(self.allocs)
        self.rng.shuffle(self.regs)

        pairs = sorted({(r["Namespace"], r["ServiceName"]) for r in self.regs})
        kinds = {}
        for _, _, kind in self.orphans:
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "region": "global",
            "namespaces": [ns for ns, _ in NAMESPACES],
            "nodes": self.nodes,
            "allocations": self.allocs,
            "evaluations": self.evals,
            "services": self.regs,
            "_bench": {
                "seed": self.seed,
                "scale": self.scale,
                "counts": {
                    "nodes": len(self.nodes),
                    "down_nodes": len(self.down_nodes),
                    "allocations": len(self.allocs),
                    "evaluations": len(self.evals),
                    "registrations": len(self.regs),
                    "pairs": len(pairs),
                    "orphans": len(self.orphans),
                    "orphan_kinds": kinds,
                    "absent_allocations": len({o[1].split("-", 2)[2][:36] for o in self.orphans
                                               if o[2] == "absent"}),
                },
                "pairs": [list(p) for p in pairs],
                "orphans": sorted(self.orphans),
            },
        }


def generate(scale=1.0, seed=20240601):
    """Return the scenario dict for scale and seed."""
    return Generator(scale, seed).build()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size factor: 1 is 5,000 nodes and 100,000 allocations, 0.01 the smoke size")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed (default 20240601)")
    parser.add_argument("--output", default="-", help="output file, - for stdout (default)")
    args = parser.parse_args(argv)
    try:
        scenario = generate(args.scale, args.seed)
    except ValueError as error:
        print("gen_scenario.py: %s" % error, file=sys.stderr)
        return 2
    text = json.dumps(scenario, separators=(",", ":"))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    counts = scenario["_bench"]["counts"]
    print("gen_scenario.py: scale %g seed %d: %s" % (args.scale, args.seed, json.dumps(counts)),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
