#!/usr/bin/env python3
"""Benchmark nomad-medic against the project's test Nomad API server on loopback.

It generates the benchmark cluster (gen_scenario.py) at each scale, loads it
into tests/fake_nomad/fake_nomad.py and measures:

- the product's pass: `nomad-medic once --mode dry-run` with a fresh journal,
  wall time and peak RSS (GNU time), median of --repeat runs;
- the floor: the fixed request set (/v1/nodes, /v1/allocations?namespace=*&
  task_states=false, /v1/services?namespace=*, and /v1/service/<name>?
  namespace=<ns> per pair) fetched 8 at a time and parsed with cJSON, once with
  floor.c's libcurl multi loop and once with `curl --parallel --parallel-max 8`
  plus floor.c's parser; the faster median is the floor;
- the operator's runbook (runbook.sh: curl and jq per request, sequentially),
  at the first scale only;
- in run mode on an unchanging cluster, the requests sent in --idle-seconds;
- as root, the node scope's host inventory with 1,000 named namespaces and
  100 real CNI allocations (tests/node/cnilab.py).

It prints a table with each target as PASS or FAIL. The exit status is 0
when every measurement ran, whatever the figures, and 1 on an error (a
command failed, or the pass or the runbook found other orphans than the
scenario holds). --smoke runs tiny sizes in well under a minute; it runs the
node-scope part only as root.

Usage:
    bench.py --binary build/nomad-medic --build-dir build [--smoke] [--json FILE]
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_SERVER = os.path.join(REPO, "tests", "fake_nomad", "fake_nomad.py")
CNILAB_DIR = os.path.join(REPO, "tests", "node")

sys.path.insert(0, HERE)
import gen_scenario  # noqa: E402  (sits next to this file)

TARGET_PASS_OVER_FLOOR = 1.3
TARGET_RUNBOOK_OVER_PASS = 10.0
TARGET_PEAK_RSS_MIB = 64.0
TARGET_INVENTORY_MS = 200.0

# Node-scope part: names of its own, so it never touches another lab or a real client's network.
NODE_NETWORK = "nmbench"
NODE_BRIDGE = "nmbench0"
NODE_SUBNET = "172.26.100.0/24"
NODE_ID = "8d3f5a2e-7c41-4b9a-a6e0-2f1d9c7b3e55"
NODE_PORT_BASE = 29000           # host ports of the allocations' port maps: 29000 upwards

# GNU time measures a child's peak RSS (Debian package "time").
GNU_TIME = "/usr/bin/time"

SERVER_START_TIMEOUT_S = 30
LOAD_TIMEOUT_S = 3600            # the test server fills every object in Python; scale 2 takes minutes
PASS_TIMEOUT_S = 1800


class BenchError(Exception):
    """A measurement could not run or gave a wrong result."""


def log(message):
    print("bench: %s" % message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes


def clean_env(extra=None):
    """The current environment without NOMAD_* variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env.update(extra or {})
    return env


def run_measured(argv, stdout_path, stderr_path, timeout_s, env=None):
    """Run argv to completion; return (wall seconds, peak RSS in KiB, exit status).

    The peak RSS comes from GNU time (/usr/bin/time), whose child is a fresh
    fork of a small process. A child forked from this Python process would
    report this process's RSS at the fork (the whole scenario) as its own
    peak. The child is killed (by its pid) after timeout_s.
    """
    rss_path = stdout_path + ".rss"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_path] + list(argv),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env if env is not None else clean_env())
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError("%s did not finish within %d s" % (argv[0], timeout_s)) from None
        wall = time.monotonic() - start
    try:
        with open(rss_path, encoding="utf-8") as handle:
            # GNU time writes "Command exited with non-zero status N" before the figure.
            rss_kib = int(handle.read().split()[-1])
    except (OSError, ValueError, IndexError):
        raise BenchError("%s wrote no peak RSS figure to %s" % (GNU_TIME, rss_path)) from None
    return wall, rss_kib, code


def tail(path, lines=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


class Server:
    """The test Nomad API server as a child process on 127.0.0.1."""

    def __init__(self, path, workdir):
        self.path = path
        self.workdir = workdir
        self.process = None
        self.port = None
        self.stderr_path = os.path.join(workdir, "server.stderr")

    def start(self):
        port_file = os.path.join(self.workdir, "server.port")
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([sys.executable, self.path, "--port-file", port_file],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=err)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not os.path.exists(port_file):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the test Nomad API server %s did not start; stderr:\n%s"
                                 % (self.path, tail(self.stderr_path)))
            time.sleep(0.02)
        with open(port_file, encoding="ascii") as handle:
            self.port = int(handle.read().strip())
        return self

    @property
    def address(self):
        return "http://127.0.0.1:%d" % self.port

    def request(self, method, path, body=None, timeout=600):
        """Send one request; return (status, body bytes, seconds to the last byte)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            start = time.monotonic()
            connection.request(method, path, body=body)
            response = connection.getresponse()
            data = response.read()
            return response.status, data, time.monotonic() - start
        finally:
            connection.close()

    def control(self, method, path, body=None, timeout=600):
        status, data, seconds = self.request(method, path, body, timeout)
        if status != 200:
            raise BenchError("%s %s on the test server returned %d: %s"
                             % (method, path, status, data[:500].decode("utf-8", "replace")))
        return json.loads(data) if data else None, seconds

    def load(self, scenario_path):
        """PUT the scenario file; return the seconds the server took."""
        with open(scenario_path, "rb") as handle:
            body = handle.read()
        _, seconds = self.control("PUT", "/_test/scenario", body, timeout=LOAD_TIMEOUT_S)
        return seconds

    def requests(self):
        return self.control("GET", "/_test/requests")[0]

    def clear_requests(self):
        self.control("DELETE", "/_test/requests")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------------------
# Build helpers


def build_tools(args, workdir):
    """Compile floor.c (and, for the node part, inventory_time.c) into workdir."""
    cc = os.environ.get("CC", "cc")
    floor = os.path.join(workdir, "floor")
    flags = pkg_config("libcjson", "libcurl")
    compile_c([cc, "-std=c11", "-O2", "-o", floor, os.path.join(HERE, "floor.c")] + flags)
    tools = {"floor": floor}
    if args.node:
        libs = [os.path.join(args.build_dir, "libnm_%s.a" % name) for name in ("host", "proc", "log")]
        missing = [lib for lib in libs if not os.path.exists(lib)]
        if missing:
            raise BenchError("%s not found; build the project first (cmake --build %s)"
                             % (", ".join(missing), args.build_dir))
        extra = []
        if sanitized_build(args.build_dir):
            extra = ["-fsanitize=address,undefined"]
        inventory = os.path.join(workdir, "inventory_time")
        compile_c([cc, "-std=c11", "-O2", "-I", os.path.join(REPO, "controller"), "-o", inventory,
                   os.path.join(HERE, "inventory_time.c")] + libs + extra
                  + pkg_config("libcjson", "libcrypto"))
        tools["inventory_time"] = inventory
    return tools


def pkg_config(*packages):
    result = subprocess.run(["pkg-config", "--cflags", "--libs"] + list(packages),
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError("pkg-config %s failed: %s" % (" ".join(packages), result.stderr.strip()))
    return result.stdout.split()


def compile_c(argv):
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError("compiling failed: %s\n%s" % (" ".join(argv), result.stderr))


def sanitized_build(build_dir):
    """True when build_dir's CMakeCache.txt has NOMAD_MEDIC_SANITIZE=ON."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt"), encoding="utf-8") as handle:
            return any(line.strip().upper() == "NOMAD_MEDIC_SANITIZE:BOOL=ON" for line in handle)
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Measurements


def floor_urls(server, scenario):
    base = server.address
    urls = [base + "/v1/nodes",
            base + "/v1/allocations?namespace=*&task_states=false",
            base + "/v1/services?namespace=*"]
    for namespace, name in scenario["_bench"]["pairs"]:
        urls.append("%s/v1/service/%s?namespace=%s" % (base, urllib.parse.quote(name, safe=""),
                                                      urllib.parse.quote(namespace, safe="")))
    return urls


def measure_floor_multi(tools, url_file, workdir):
    out, err = os.path.join(workdir, "floor.out"), os.path.join(workdir, "floor.err")
    wall, _, code = run_measured([tools["floor"], "fetch", url_file, "8"], out, err, PASS_TIMEOUT_S)
    if code != 0:
        raise BenchError("the floor (libcurl multi) failed with status %d:\n%s" % (code, tail(err)))
    with open(out, encoding="utf-8") as handle:
        return wall, json.loads(handle.read())


def measure_floor_cli(tools, urls, workdir):
    """`curl --parallel --parallel-max 8` into a directory, then floor.c parses every file."""
    body_dir = os.path.join(workdir, "floor-bodies")
    shutil.rmtree(body_dir, ignore_errors=True)
    os.makedirs(body_dir)
    config = os.path.join(workdir, "curl.config")
    with open(config, "w", encoding="utf-8") as handle:
        for position, url in enumerate(urls):
            handle.write('url = "%s"\noutput = "%s/%06d.json"\n' % (url, body_dir, position))
    err = os.path.join(workdir, "curl.err")
    start = time.monotonic()
    with open(err, "wb") as err_handle:
        fetch = subprocess.run(["curl", "--parallel", "--parallel-max", "8", "--silent",
                                "--show-error", "--fail", "--config", config],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_handle,
                               env=clean_env(), check=False, timeout=PASS_TIMEOUT_S)
    if fetch.returncode != 0:
        raise BenchError("curl --parallel failed with status %d:\n%s" % (fetch.returncode, tail(err)))
    parse = subprocess.run([tools["floor"], "parse", body_dir], capture_output=True, text=True,
                           check=False, timeout=PASS_TIMEOUT_S)
    wall = time.monotonic() - start
    if parse.returncode != 0:
        raise BenchError("the floor parser failed: %s" % parse.stderr.strip())
    result = json.loads(parse.stdout)
    if result["files"] != len(urls):
        raise BenchError("curl --parallel saved %d bodies for %d URLs" % (result["files"], len(urls)))
    shutil.rmtree(body_dir, ignore_errors=True)
    return wall, result


def write_policy(path, server, journal, interval="1m", extra=""):
    text = "\n".join([
        'nomad = { address = "%s"; };' % server.address,
        'journal = { path = "%s"; };' % journal,
        'controller = { interval = "%s"; pause_file = "%s"; };'
        % (interval, os.path.join(os.path.dirname(journal), "pause")),
        extra,
        "",
    ])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def endpoint_of(entry):
    """Group a recorded request by method and path, with per-object paths folded."""
    parts = entry["path"].split("/")
    if len(parts) > 3 and parts[2] in ("service", "allocation", "node", "var"):
        return "%s /v1/%s/*" % (entry["method"], parts[2])
    return "%s %s" % (entry["method"], entry["path"])


def count_by_endpoint(entries):
    counts = {}
    for entry in entries:
        key = endpoint_of(entry)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def orphan_ids(scenario):
    return {(namespace, reg_id) for namespace, reg_id, _ in scenario["_bench"]["orphans"]}


def measure_pass(args, server, scenario, workdir, run):
    """One `once --mode dry-run` with a fresh journal; returns wall, peak RSS, requests."""
    journal = os.path.join(workdir, "journal-%d.db" % run)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(journal + suffix):
            os.unlink(journal + suffix)
    policy = write_policy(os.path.join(workdir, "pass.conf"), server, journal)
    out, err = os.path.join(workdir, "pass.out"), os.path.join(workdir, "pass.err")
    server.clear_requests()
    wall, rss_kib, code = run_measured([args.binary, "once", "--mode", "dry-run", "--config", policy],
                                       out, err, PASS_TIMEOUT_S)
    if code != 0:
        raise BenchError("nomad-medic once exited %d:\n%s" % (code, tail(err)))
    requests = server.requests()
    server.clear_requests()

    connection = sqlite3.connect(journal)
    try:
        found = {(row[0], row[1]) for row in connection.execute(
            "SELECT namespace_name, target FROM actions WHERE kind = 'service_delete'")}
    finally:
        connection.close()
    expected = orphan_ids(scenario)
    if found != expected:
        raise BenchError("the pass journaled %d service_delete actions, expected the scenario's %d "
                         "orphans (%d missing, %d extra); see %s"
                         % (len(found), len(expected), len(expected - found), len(found - expected), err))
    return {"wall_s": wall, "peak_rss_kib": rss_kib, "requests": len(requests),
            "by_endpoint": count_by_endpoint(requests)}


def measure_server_lists(server):
    """Time one uncompressed GET of each list on a fresh connection; return seconds and bytes per path."""
    timings = {}
    for path in ("/v1/nodes", "/v1/allocations?namespace=*&task_states=false", "/v1/services?namespace=*"):
        status, data, seconds = server.request("GET", path)
        if status != 200:
            raise BenchError("GET %s returned %d: %s" % (path, status, data[:300]))
        timings[path] = {"seconds": seconds, "bytes": len(data)}
    server.clear_requests()
    return timings


def measure_scale(args, tools, server, scale, workdir):
    log("scale %g: generating the scenario" % scale)
    scenario = gen_scenario.generate(scale, args.seed)
    path = os.path.join(workdir, "scenario-%g.json" % scale)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(scenario, handle, separators=(",", ":"))
    log("scale %g: loading %.1f MB into the test server" % (scale, os.path.getsize(path) / 1e6))
    load_s = server.load(path)
    lists = measure_server_lists(server)

    urls = floor_urls(server, scenario)
    url_file = os.path.join(workdir, "urls.txt")
    with open(url_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(urls) + "\n")

    passes, multi, cli = [], [], []
    for run in range(args.repeat):
        log("scale %g: run %d of %d: floor (libcurl multi), floor (curl --parallel), pass"
            % (scale, run + 1, args.repeat))
        wall, result = measure_floor_multi(tools, url_file, workdir)
        multi.append(wall)
        wall, _ = measure_floor_cli(tools, urls, workdir)
        cli.append(wall)
        passes.append(measure_pass(args, server, scenario, workdir, run))
        server.clear_requests()
    return {
        "scale": scale,
        "counts": scenario["_bench"]["counts"],
        "scenario_mb": os.path.getsize(path) / 1e6,
        "server_load_s": load_s,
        "server_lists": lists,
        "floor_requests": len(urls),
        "floor_bytes": result["bytes"],
        "floor_multi_s": multi,
        "floor_cli_s": cli,
        "pass_s": [p["wall_s"] for p in passes],
        "pass_peak_rss_kib": [p["peak_rss_kib"] for p in passes],
        "pass_requests": passes[-1]["requests"],
        "pass_by_endpoint": passes[-1]["by_endpoint"],
        "scenario": scenario,
        "scenario_path": path,
    }


def measure_runbook(args, server, scenario, workdir):
    """Run runbook.sh fully, or on --runbook-sample pairs and extrapolate the per-service loop."""
    pairs = len(scenario["_bench"]["pairs"])
    limit = args.runbook_sample if 0 < args.runbook_sample < pairs else 0
    work = os.path.join(workdir, "runbook")
    shutil.rmtree(work, ignore_errors=True)
    out, err = os.path.join(workdir, "runbook.out"), os.path.join(workdir, "runbook.err")
    log("runbook: %s" % ("%d of %d service requests, then extrapolated" % (limit, pairs) if limit
                         else "all %d service requests, one curl and one jq each" % pairs))
    wall, _, code = run_measured(["bash", os.path.join(HERE, "runbook.sh"), server.address, work,
                                  str(limit)], out, err, 4 * 3600)
    if code != 0:
        raise BenchError("runbook.sh exited %d:\n%s" % (code, tail(err)))
    phases = {}
    with open(err, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 6 and fields[:2] == ["runbook:", "phase"]:
                phases[fields[2]] = {"seconds": float(fields[4]) - float(fields[3]), "count": int(fields[5])}
    if set(phases) != {"lists", "services", "join"}:
        raise BenchError("runbook.sh did not report its three phases; stderr:\n%s" % tail(err))
    server.clear_requests()

    result = {"wall_s": wall, "phases": phases, "pairs": pairs, "sampled": phases["services"]["count"]}
    if limit:
        per_request = phases["services"]["seconds"] / max(phases["services"]["count"], 1)
        result["estimate_s"] = (phases["lists"]["seconds"] + per_request * pairs
                                + phases["join"]["seconds"])
        result["extrapolated"] = True
    else:
        result["estimate_s"] = wall
        result["extrapolated"] = False
        with open(os.path.join(work, "orphans.tsv"), encoding="utf-8") as handle:
            found = {tuple(line.split("\t")[:2]) for line in handle if line.strip()}
        if found != orphan_ids(scenario):
            raise BenchError("the runbook listed %d orphans, the scenario holds %d"
                             % (len(found), len(orphan_ids(scenario))))
    return result


def quiet_variant(scenario):
    """The scenario without its orphaned registrations, so a pass proposes no service_delete."""
    orphans = {reg_id for _, reg_id, _ in scenario["_bench"]["orphans"]}
    quiet = dict(scenario)
    quiet["services"] = [r for r in scenario["services"] if r["ID"] not in orphans]
    quiet["_bench"] = dict(scenario["_bench"], orphans=[])
    return quiet


def measure_idle(args, server, workdir, label, extra_policy=""):
    """Run `nomad-medic run` on an unchanging cluster and record the requests of one window.

    The window opens half an interval after the first pass finished, so with
    a product that lists again every interval, exactly one such pass falls in
    a window as long as the interval.
    """
    journal = os.path.join(workdir, "idle-%s.db" % label)
    policy = write_policy(os.path.join(workdir, "idle-%s.conf" % label), server, journal,
                          interval=args.idle_interval, extra=extra_policy)
    err_path = os.path.join(workdir, "idle-%s.err" % label)
    interval_s = parse_seconds(args.idle_interval)
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([args.binary, "run", "--mode", "dry-run", "--config", policy],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=clean_env())
    try:
        deadline = time.monotonic() + PASS_TIMEOUT_S
        while "pass 1 finished" not in tail(err_path, 400):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("nomad-medic run did not finish its first pass:\n%s" % tail(err_path))
            time.sleep(0.05)
        time.sleep(interval_s / 2)
        server.clear_requests()
        window_start = time.time()
        time.sleep(args.idle_seconds)
        entries = [e for e in server.requests() if e["time"] >= window_start]
        server.clear_requests()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return judge_idle(entries, args.idle_seconds)


def parse_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[:-len(suffix)].isdigit():
            return int(text[:-len(suffix)]) * units[suffix]
    raise BenchError("invalid --idle-interval %r; use a form like 90s or 1m" % text)


def judge_idle(entries, window_s):
    """Count a window's requests per endpoint and check them against the idle target.

    A watched endpoint is one read with index= (a blocking query); its wait
    period is its wait= value (Nomad's default 5 minutes without one). The
    target holds when every GET in the window was such a query and no
    endpoint got more than one per wait period: ceil(window / wait), at least 1.
    """
    endpoints = {}
    plain_gets = 0
    writes = 0
    for entry in entries:
        params = entry.get("params") or {}
        query = "&".join("%s=%s" % (k, v) for k, v in sorted(params.items())
                         if k not in ("index", "wait", "next_token", "per_page"))
        key = "%s %s%s" % (entry["method"], entry["path"], "?" + query if query else "")
        if entry["method"] != "GET":
            writes += 1
            continue
        index = params.get("index")
        if not index or index == "0":
            plain_gets += 1
            continue
        wait = params.get("wait") or "300s"
        slot = endpoints.setdefault(key, {"count": 0, "wait_s": parse_go_wait(wait)})
        slot["count"] += 1
    over = []
    for key, slot in endpoints.items():
        allowed = max(1, -(-int(window_s) // max(int(slot["wait_s"]), 1)))
        slot["allowed"] = allowed
        if slot["count"] > allowed:
            over.append(key)
    return {
        "window_s": window_s,
        "total": len(entries),
        "gets_without_index": plain_gets,
        "writes": writes,
        "watched": endpoints,
        "over_budget": over,
        "by_endpoint": count_by_endpoint(entries),
        "pass": plain_gets == 0 and not over,
    }


def parse_go_wait(text):
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        if text.endswith("s"):
            return float(text[:-1])
        if text.endswith("m"):
            return float(text[:-1]) * 60
    except ValueError:
        pass
    return 300.0


# ---------------------------------------------------------------------------
# Node scope


def measure_node(args, tools, server, workdir):
    """Inventory a host with named namespaces and real CNI allocations; remove all of it after."""
    sys.path.insert(0, CNILAB_DIR)
    import cnilab  # noqa: E402  (tests/node, root only)

    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=False).stdout
    ports = range(NODE_PORT_BASE, NODE_PORT_BASE + args.node_allocs)
    busy = [line for line in listening.splitlines()
            if any(line.split()[3].endswith(":%d" % p) for p in ports if len(line.split()) > 3)]
    if busy:
        raise BenchError("host ports %d-%d are in use (%s); the node part maps them into its "
                         "allocations" % (ports[0], ports[-1], busy[0]))

    prefix = "nmbench-%s-" % uuid.uuid4().hex[:6]
    names = ["%s%04d" % (prefix, i) for i in range(args.node_netns)]
    lab = cnilab.Lab(network=NODE_NETWORK, bridge=NODE_BRIDGE, subnet=NODE_SUBNET,
                     register_atexit=True)
    leaked = []
    created_ns = False
    try:
        log("node: %d named namespaces and %d CNI allocations" % (len(names), args.node_allocs))
        ip_batch(["netns add %s" % name for name in names])
        created_ns = True
        allocs = []
        for i in range(args.node_allocs):
            alloc_id = str(uuid.uuid4())
            lab.add(alloc_id, ports=[(NODE_PORT_BASE + i, 8080)])
            # One in ten was stopped but its network state leaked (complete in Nomad).
            status = "complete" if i % 10 == 9 else "running"
            if status == "complete":
                leaked.append(alloc_id)
            allocs.append({"ID": alloc_id, "Namespace": "default", "NodeID": NODE_ID, "JobID": "web",
                           "TaskGroup": "web", "ClientStatus": status, "DesiredStatus": "run"})
        scenario = {"nodes": [{"ID": NODE_ID, "Name": "bench-client", "Status": "ready"}],
                    "allocations": allocs,
                    "agent_self": {"stats": {"client": {"node_id": NODE_ID}}}}
        path = os.path.join(workdir, "node-scenario.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(scenario, handle)
        server.load(path)

        paths = lab.product_paths()
        argv = [tools["inventory_time"], "--repeat", str(args.node_repeat),
                "--netns-dir", paths["netns_dir"], "--cni-cache-dir", paths["cni_cache_dir"],
                "--ipam-dir", paths["ipam_dir"], "--network", paths["network_name"],
                "--bridge", paths["bridge_name"]]
        if paths["ipam_dir_legacy"]:
            argv += ["--ipam-dir-legacy", paths["ipam_dir_legacy"]]
        inventory = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if inventory.returncode != 0:
            raise BenchError("inventory_time failed: %s" % inventory.stderr.strip())
        figures = json.loads(inventory.stdout)
        if figures["netns"] < len(names) + args.node_allocs or figures["failed_sources"]:
            raise BenchError("the inventory saw %d namespaces (expected at least %d) and failed "
                             "sources %s" % (figures["netns"], len(names) + args.node_allocs,
                                             figures["failed_sources"]))

        policy = write_node_policy(os.path.join(workdir, "node.conf"), server, workdir, paths)
        plans = []
        for _ in range(args.node_repeat):
            out, err = os.path.join(workdir, "node-plan.out"), os.path.join(workdir, "node-plan.err")
            wall, _, code = run_measured([args.binary, "plan", "--scope", "node", "--json",
                                          "--config", policy], out, err, 600)
            if code not in (0, 2):
                raise BenchError("nomad-medic plan --scope node exited %d:\n%s" % (code, tail(err)))
            plans.append(wall)
        with open(out, encoding="utf-8") as handle:
            plan = json.load(handle)
        targets = {a.get("target") for a in plan.get("actions", []) if a.get("kind") == "netns_clear"}
        if targets != set(leaked):
            raise BenchError("the node plan proposed netns_clear for %d allocations, expected the %d "
                             "leaked ones" % (len(targets), len(leaked)))
        figures["plan_s"] = plans
        figures["named_netns"] = len(names)
        figures["cni_allocs"] = args.node_allocs
        return figures
    finally:
        cleanup_errors = []
        if created_ns:
            try:
                ip_batch(["netns delete %s" % name for name in names], check=False)
            except BenchError as error:
                cleanup_errors.append(str(error))
            left = [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)] \
                if os.path.isdir("/var/run/netns") else []
            if left:
                cleanup_errors.append("namespaces left: %s" % ", ".join(left[:5]))
        try:
            lab.teardown()
        except Exception as error:  # noqa: BLE001  (report every cleanup failure, then raise)
            cleanup_errors.append("cnilab teardown: %s; run: python3 %s teardown --network %s"
                                  % (error, os.path.join(CNILAB_DIR, "cnilab.py"), NODE_NETWORK))
        if cleanup_errors:
            raise BenchError("cleanup of the node part failed: %s" % "; ".join(cleanup_errors))


def ip_batch(commands, check=True):
    result = subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n",
                            capture_output=True, text=True, check=False, timeout=600)
    if check and result.returncode != 0:
        raise BenchError("ip -batch failed: %s" % result.stderr.strip()[:500])


def write_node_policy(path, server, workdir, paths):
    text = "\n".join([
        'nomad = { address = "%s"; };' % server.address,
        'journal = { path = "%s"; };' % os.path.join(workdir, "node-journal.db"),
        'controller = { mode = "dry-run"; pause_file = "%s"; };' % os.path.join(workdir, "pause"),
        "node = {",
        '  node_id = "%s";' % NODE_ID,
        '  cni_cache_dir = "%s";' % paths["cni_cache_dir"],
        '  ipam_dir = "%s";' % paths["ipam_dir"],
    ] + (['  ipam_dir_legacy = "%s";' % paths["ipam_dir_legacy"]] if paths["ipam_dir_legacy"] else []) + [
        '  network = "%s";' % paths["network_name"],
        '  bridge = "%s";' % paths["bridge_name"],
        '  cni_path = "%s";' % paths["cni_path"],
        "};",
        "",
    ])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


# ---------------------------------------------------------------------------
# Report


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem_kib = int(handle.readline().split()[1])
        with open("/proc/loadavg", encoding="utf-8") as handle:
            load = handle.read().split()[0]
    except OSError:
        mem_kib, load = 0, "?"
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": mem_kib / 2**20, "load_at_start": load,
            "kernel": platform.release(), "python": platform.python_version()}


def verdict(ok):
    return "PASS" if ok else "FAIL"


def report(results):
    m = results["machine"]
    print("nomad-medic benchmark: %d CPUs (%s), %.1f GiB RAM, load %s at start; server %s"
          % (m["cpus"], m["cpu"], m["memory_gib"], m["load_at_start"], results["server"]))
    for s in results["scales"]:
        c = s["counts"]
        print("\nscale %g: %d nodes, %d allocations, %d evaluations, %d registrations in %d pairs, "
              "%d orphans (%s)" % (s["scale"], c["nodes"], c["allocations"], c["evaluations"],
                                   c["registrations"], c["pairs"], c["orphans"],
                                   ", ".join("%s %d" % kv for kv in sorted(c["orphan_kinds"].items()))))
        print("  server: load %.1f s (%.1f MB); one GET: %s" % (
            s["server_load_s"], s["scenario_mb"],
            ", ".join("%s %.2f s" % (p.split("?")[0], v["seconds"]) for p, v in s["server_lists"].items())))
        print("  %-38s %8.2f s  (runs %s)  %d requests, peak RSS %.1f MiB (max of runs)" % (
            "pass (once --mode dry-run)", s["pass_median_s"], fmt_runs(s["pass_s"]), s["pass_requests"],
            s["peak_rss_mib"]))
        print("  %-38s %8.2f s  (runs %s)  %d requests, %.1f MB" % (
            "floor, libcurl multi + cJSON", statistics.median(s["floor_multi_s"]),
            fmt_runs(s["floor_multi_s"]), s["floor_requests"], s["floor_bytes"] / 1e6))
        print("  %-38s %8.2f s  (runs %s)" % ("floor, curl --parallel + cJSON", statistics.median(s["floor_cli_s"]),
                                              fmt_runs(s["floor_cli_s"])))
        print("  pass requests: %s" % ", ".join("%s %d" % kv for kv in s["pass_by_endpoint"].items()))
    if results.get("runbook"):
        r = results["runbook"]
        how = ("EXTRAPOLATED from %d of %d service requests" % (r["sampled"], r["pairs"])
               if r["extrapolated"] else "full run, %d service requests" % r["pairs"])
        print("\nrunbook (curl + jq per request, sequential): %.1f s (%s; lists %.1f s, services %.1f s, "
              "join %.1f s)" % (r["estimate_s"], how, r["phases"]["lists"]["seconds"],
                                r["phases"]["services"]["seconds"], r["phases"]["join"]["seconds"]))
    for label, idle in results.get("idle", {}).items():
        print("\nidle run (%s), %d s window: %d requests, %d GETs without index=, %d writes"
              % (label, idle["window_s"], idle["total"], idle["gets_without_index"], idle["writes"]))
        for key, slot in idle["watched"].items():
            print("  watched %s: %d (wait %gs, at most %d)" % (key, slot["count"], slot["wait_s"],
                                                             slot["allowed"]))
        if idle["gets_without_index"]:
            print("  without index=: %s" % ", ".join(
                "%s %d" % kv for kv in list(idle["by_endpoint"].items())[:8]))
    if results.get("node"):
        n = results["node"]
        print("\nnode scope: %d named namespaces + %d CNI allocations (%d namespaces, %d iptables rules, "
              "%d veths seen): inventory median %.1f ms (min %.1f, max %.1f); whole plan --scope node "
              "median %.2f s" % (n["named_netns"], n["cni_allocs"], n["netns"], n["rules"], n["veths"],
                                 n["median_ms"], n["min_ms"], n["max_ms"], statistics.median(n["plan_s"])))

    print("\ntargets:")
    for target in results["targets"]:
        print("  %-58s %-12s %-16s %s" % (target["name"], target["figure"], target["target"],
                                          verdict(target["ok"])))


def fmt_runs(values):
    return " ".join("%.2f" % v for v in values)


def targets_of(results):
    targets = []
    first = results["scales"][0]
    for s in results["scales"]:
        ratio = s["pass_median_s"] / s["floor_s"]
        s["pass_over_floor"] = ratio
        targets.append({"name": "pass / floor, scale %g" % s["scale"], "figure": "%.2f" % ratio,
                        "target": "<= %.1f" % TARGET_PASS_OVER_FLOOR, "ok": ratio <= TARGET_PASS_OVER_FLOOR})
    if results.get("runbook"):
        ratio = results["runbook"]["estimate_s"] / first["pass_median_s"]
        targets.append({"name": "runbook / pass, scale %g%s" % (
            first["scale"], " (extrapolated)" if results["runbook"]["extrapolated"] else ""),
            "figure": "%.1f" % ratio, "target": ">= %.0f" % TARGET_RUNBOOK_OVER_PASS,
            "ok": ratio >= TARGET_RUNBOOK_OVER_PASS})
    for s in results["scales"]:
        targets.append({"name": "pass peak RSS, scale %g" % s["scale"], "figure": "%.1f MiB" % s["peak_rss_mib"],
                        "target": "<= %.0f MiB" % TARGET_PEAK_RSS_MIB,
                        "ok": s["peak_rss_mib"] <= TARGET_PEAK_RSS_MIB})
    for label, idle in results.get("idle", {}).items():
        targets.append({"name": "idle requests in %d s (%s)" % (idle["window_s"], label),
                        "figure": "%d" % idle["total"], "target": "1/endpoint/wait", "ok": idle["pass"]})
    if results.get("node"):
        n = results["node"]
        targets.append({"name": "node inventory, %d netns + %d CNI allocs" % (n["named_netns"], n["cni_allocs"]),
                        "figure": "%.1f ms" % n["median_ms"], "target": "<= %.0f ms" % TARGET_INVENTORY_MS,
                        "ok": n["median_ms"] <= TARGET_INVENTORY_MS})
    return targets


# ---------------------------------------------------------------------------


# Sizes and durations of a full run and of --smoke; an option given on the command line wins.
FULL_DEFAULTS = {"scales": "1,2", "repeat": 3, "idle_seconds": 60, "idle_interval": "1m",
                 "node_netns": 1000, "node_allocs": 100, "node_repeat": 5}
SMOKE_DEFAULTS = {"scales": "0.01,0.02", "repeat": 1, "idle_seconds": 3, "idle_interval": "2s",
                  "node_netns": 20, "node_allocs": 4, "node_repeat": 2}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.environ.get("NOMAD_MEDIC_BIN"),
                        help="the nomad-medic binary (default: $NOMAD_MEDIC_BIN)")
    parser.add_argument("--build-dir", help="the CMake build directory, for the node part's "
                        "inventory timer (default: the binary's directory)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="the test Nomad API server script")
    parser.add_argument("--scales", help="comma-separated scale factors (default 1,2; smoke 0.01,0.02)")
    parser.add_argument("--seed", type=int, default=20240601, help="scenario seed (default 20240601)")

    parser.add_argument("--repeat", type=int, help="runs of the pass and each floor (default 3; smoke 1)")
    parser.add_argument("--runbook-sample", type=int, default=0,
                        help="time the runbook on this many service requests and extrapolate "
                        "(default 0: run it fully)")
    parser.add_argument("--no-runbook", dest="runbook", action="store_false", help="skip the runbook")

    parser.add_argument("--idle-seconds", type=int, help="idle window in seconds (default 60; smoke 3)")
    parser.add_argument("--idle-interval", help="controller.interval for the idle run "
                        "(default 1m, the shipped default; smoke 2s)")
    parser.add_argument("--no-idle", dest="idle", action="store_false", help="skip the idle run")

    parser.add_argument("--no-node", dest="node", action="store_false", help="skip the node-scope part")
    parser.add_argument("--node-netns", type=int, help="named namespaces (default 1000; smoke 20)")
    parser.add_argument("--node-allocs", type=int, help="CNI allocations (default 100; smoke 4)")
    parser.add_argument("--node-repeat", type=int, help="inventory reads and plans (default 5; smoke 2)")

    parser.add_argument("--smoke", action="store_true",
                        help="small-size defaults that check every part runs, in well under a minute; "
                        "the node part runs only as root")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    defaults = SMOKE_DEFAULTS if args.smoke else FULL_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, low, high in (("repeat", 1, 100), ("idle_seconds", 1, 3600), ("node_netns", 0, 100000),
                            ("node_allocs", 1, 200), ("node_repeat", 1, 100), ("runbook_sample", 0, 10**9)):
        if not low <= getattr(args, name) <= high:
            parser.error("invalid --%s %r; use %d to %d" % (name.replace("_", "-"), getattr(args, name),
                                                            low, high))
    if not args.binary:
        parser.error("--binary (or NOMAD_MEDIC_BIN) is required")
    if not os.access(GNU_TIME, os.X_OK):
        parser.error("%s is missing; install GNU time (Debian package \"time\"), which measures "
                     "the peak RSS" % GNU_TIME)
    args.binary = os.path.abspath(args.binary)
    args.build_dir = os.path.abspath(args.build_dir or os.path.dirname(args.binary))
    if args.node and os.geteuid() != 0:
        if not args.smoke:
            parser.error("the node-scope part needs root (namespaces, a bridge, iptables rules); "
                         "run as root or pass --no-node")
        log("not root: skipping the node-scope part")
        args.node = False
    try:
        args.scales = [float(s) for s in args.scales.split(",") if s]
    except ValueError:
        parser.error("invalid --scales %r; use comma-separated numbers such as 1,2" % args.scales)
    return args


def main(argv=None):
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="nomad-medic-bench-")
    results = {"machine": machine(), "server": os.path.relpath(os.path.abspath(args.server), REPO)
               if os.path.abspath(args.server).startswith(REPO) else os.path.abspath(args.server),
               "binary": args.binary, "seed": args.seed, "scales": []}
    server = Server(os.path.abspath(args.server), workdir)
    try:
        tools = build_tools(args, workdir)
        server.start()
        for position, scale in enumerate(args.scales):
            figures = measure_scale(args, tools, server, scale, workdir)
            figures["pass_median_s"] = statistics.median(figures["pass_s"])
            figures["floor_s"] = min(statistics.median(figures["floor_multi_s"]),
                                     statistics.median(figures["floor_cli_s"]))
            figures["peak_rss_mib"] = max(figures["pass_peak_rss_kib"]) / 1024
            scenario = figures.pop("scenario")
            if position == 0:
                if args.runbook:
                    results["runbook"] = measure_runbook(args, server, scenario, workdir)
                if args.idle:
                    results["idle"] = {}
                    log("idle run on the benchmark cluster (%d s)" % args.idle_seconds)
                    results["idle"]["benchmark cluster, orphans pending"] = measure_idle(
                        args, server, workdir, "findings")
                    quiet = os.path.join(workdir, "quiet.json")
                    with open(quiet, "w", encoding="utf-8") as handle:
                        json.dump(quiet_variant(scenario), handle, separators=(",", ":"))
                    server.load(quiet)
                    log("idle run on the same cluster without orphans, system_gc off (%d s)"
                        % args.idle_seconds)
                    results["idle"]["no findings"] = measure_idle(
                        args, server, workdir, "quiet", "rules = { system_gc = { enabled = false; }; };")
            del scenario
            results["scales"].append(figures)
        if args.node:
            results["node"] = measure_node(args, tools, server, workdir)
        results["targets"] = targets_of(results)
    except BenchError as error:
        log("error: %s" % error)
        log("work directory kept: %s" % workdir)
        return 1
    finally:
        server.stop()
    report(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, default=str)
    if args.keep:
        log("work directory: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
