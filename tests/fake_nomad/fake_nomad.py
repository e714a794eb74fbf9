#!/usr/bin/env python3
"""Test Nomad HTTP API server for nomad-medic's integration tests.

It serves the read and write endpoints nomad-medic uses with the wire
behaviour of a Nomad 1.x/2.x server: PascalCase JSON bodies, plain-text
errors, Go-canonical X-Nomad-* headers, blocking queries, pagination,
namespaces, ACL tokens and gzip. It also serves variables and variable locks.
A scenario may list servers whose health and leadership change over time, and
host agents come back after a recorded restart. State comes from a scenario
(JSON) and can be changed, inspected and broken through a control API under
/_test/. A scenario timeline changes it by time or by logical tick. See
README.md next to this file for the scenario format, the control API and the
fault rules.

Usage:
    python3 fake_nomad.py --port-file FILE [--port 0]
                          [--scenario FILE.json | --scenario-name NAME]

Standard library only. Listens on 127.0.0.1 only.
"""

import argparse
import bisect
import copy
import gzip
import hashlib
import ipaddress
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))

# Nomad servers cap a blocking query's wait at 300 s, use 300 s when no wait is
# given, and add random jitter of up to wait/16.
MAX_BLOCKING_WAIT_S = 300.0
BLOCKING_JITTER_FRACTION = 16

TERMINAL_ALLOC_STATUSES = ("complete", "failed", "lost")
TERMINAL_EVAL_STATUSES = ("complete", "failed", "canceled")

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"

# Go's http.Header canonicalises names, so "X-Nomad-KnownLeader" goes out as
# "X-Nomad-Knownleader".
HEADER_INDEX = "X-Nomad-Index"
HEADER_KNOWN_LEADER = "X-Nomad-Knownleader"
HEADER_LAST_CONTACT = "X-Nomad-Lastcontact"
HEADER_NEXT_TOKEN = "X-Nomad-Nexttoken"

ERR_INVALID_METHOD = "Invalid method"
ERR_NO_LEADER = "No cluster leader"
ERR_PERMISSION_DENIED = "Permission denied"
ERR_TOKEN_NOT_FOUND = "ACL token not found"
ERR_NOT_FOUND_PAGE = "404 page not found\n"

DEFAULT_LEADER = "127.0.0.1:4647"
DEFAULT_SERVER_ID = "5f5a3b8e-64c2-9d1e-7a40-0c3b2f9d1e11"
DEFAULT_VERSION = "1.10.5"

# Variables and locks, from nomad/structs/variables.go in Nomad's source (main,
# 2.0.6-dev): path syntax, the 64 KiB limit on the summed length of item keys
# and values, and the lock defaults and TTL range.
VARIABLE_PATH = re.compile(r"[a-zA-Z0-9\-_~/]{1,128}")
MAX_VARIABLE_SIZE = 65536
DEFAULT_LOCK_TTL_S = 15.0
DEFAULT_LOCK_DELAY_S = 15.0
MIN_LOCK_TTL_S = 10.0
MAX_LOCK_TTL_S = 24 * 3600.0
# Nomad's leader arms a lock's timer with twice the TTL (nomad/locks.go), so a
# lock expires between TTL and 2 x TTL after its last renewal.
LOCK_TTL_FACTOR = 2.0
LOCK_OPERATIONS = ("lock-acquire", "lock-renew", "lock-release")
# Nomad wraps a coded RPC error in a second coded error for these checks, so
# the HTTP body keeps one copy of the prefix (nomad/variables_endpoint.go Apply).
RPC_400_PREFIX = "RPC Error:: 400,"

SERVER_STATUSES = ("alive", "failed", "left")
DEFAULT_RPC_PORT = 4647
DEFAULT_SERF_PORT = 4648

# When a host agent comes back after POST /_test/restarted and its scenario
# entry has no "_restart": after one tick or one second, whichever comes first.
DEFAULT_RESTART = {"ready_after_s": 1.0, "ready_after_ticks": 1}
RESTART_KEYS = ("ready_after_s", "ready_after_ticks", "never")

# Operations of PUT /_test/mutate, which scenario timelines also use.
MUTATION_OPS = (
    "set_alloc_status", "remove_alloc", "add_alloc", "add_service", "add_registration",
    "remove_service", "remove_registration", "set_node_status", "add_node", "remove_node",
    "add_eval", "remove_eval", "set_leader", "set_known_leader", "set_autopilot_healthy",
    "set_server_status", "set_server_healthy", "set_variable", "delete_variable",
    "add_job", "remove_job",
)
# The scheduler thread wakes at least this often (seconds) to run due work.
SCHEDULER_IDLE_S = 0.5


# ---------------------------------------------------------------------------
# Small helpers


def now_ns():
    return time.time_ns()


def stable_uuid(label):
    """Return a Nomad-shaped UUID (8-4-4-4-12 hex) derived from label."""
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()
    return "-".join((digest[0:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32]))


def stable_number(label, low, high):
    """Return a deterministic integer in [low, high) derived from label."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low)


def rfc3339(ns):
    seconds, rest = divmod(int(ns), 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return "%s.%09dZ" % (stamp, rest)


_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text):
    """Parse a Go time.ParseDuration string ("30s", "1m30s", "1500ms") into seconds.

    A bare number other than "0" is invalid, as in Go. Raises ValueError.
    """
    if not text:
        raise ValueError("empty duration")
    rest = text
    sign = 1.0
    if rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError("invalid duration %r" % text)
    total = 0.0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError("invalid duration %r" % text)
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_go_bool(text):
    """Parse like Go's strconv.ParseBool. Raises ValueError."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError("invalid bool %r" % text)


def format_go_duration(seconds):
    """Format seconds as Go's time.Duration.String does: "15s", "1m0s", "1.5s", "27.291304ms"."""
    total_ns = int(round(seconds * 1e9))
    if total_ns == 0:
        return "0s"
    sign = "-" if total_ns < 0 else ""
    total_ns = abs(total_ns)
    if total_ns < 1_000:
        return "%s%dns" % (sign, total_ns)
    if total_ns < 1_000_000:
        return sign + decimal_units(total_ns, 1_000) + "\u00b5s"
    if total_ns < 1_000_000_000:
        return sign + decimal_units(total_ns, 1_000_000) + "ms"
    hours, rest = divmod(total_ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    text = decimal_units(rest, 1_000_000_000) + "s"
    if hours:
        return "%s%dh%dm%s" % (sign, hours, minutes, text)
    if minutes:
        return "%s%dm%s" % (sign, minutes, text)
    return sign + text


def decimal_units(value, unit):
    """Return value / unit as a decimal string without trailing zeros (both integers)."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return "%d.%s" % (whole, ("%0*d" % (digits, fraction)).rstrip("0"))


def multierror_text(messages):
    """Format errors the way hashicorp/go-multierror's default formatter does."""
    if len(messages) == 1:
        return "1 error occurred:\n\t* %s\n\n" % messages[0]
    points = "".join("\t* %s\n" % message for message in messages)
    return "%d errors occurred:\n%s\n" % (len(messages), points)


def deep_merge(base, override):
    """Return base with override merged in: dicts merge key by key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key in merged:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def relative_time(value, now):
    """Resolve a scenario time given in the unit of now.

    A negative value means that long before now, so a static scenario file can
    express "went down two hours ago" (StatusUpdatedAt: -7200).
    """
    if value is None:
        return None
    value = int(value)
    return now + value if value < 0 else value


def split_registration_id(reg_id, service_name):
    """Return (task, port_label) from a native service registration ID, or (None, None).

    IDs look like _nomad-task-<allocID>-<task>-<serviceName>-<portLabel>. Task and
    service names may contain '-', so the alloc ID is the 36 characters after the
    12-character prefix and the service name is matched literally.
    """
    prefix = "_nomad-task-"
    if not reg_id.startswith(prefix) or len(reg_id) < len(prefix) + 37:
        return None, None
    rest = reg_id[len(prefix) + 37:]
    marker = "-%s-" % service_name
    pos = rest.rfind(marker)
    if pos <= 0:
        return None, None
    return rest[:pos], rest[pos + len(marker):]


class HttpError(Exception):
    """An error that Nomad sends as plain text with a status code."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


# ---------------------------------------------------------------------------
# Sample-shaped defaults. Field sets follow the Nomad API docs' examples and
# the Go structs (Node, NodeListStub, Allocation, AllocListStub, Evaluation,
# ServiceRegistration).


def node_ip(node):
    http_addr = node.get("HTTPAddr") or ""
    return http_addr.rsplit(":", 1)[0] if ":" in http_addr else http_addr


def default_drivers(update_time):
    def driver(detected, description, attributes):
        return {
            "Attributes": attributes,
            "Detected": detected,
            "HealthDescription": description,
            "Healthy": detected,
            "UpdateTime": update_time,
        }

    return {
        "docker": driver(True, "Healthy", {
            "driver.docker": "true",
            "driver.docker.bridge_ip": "172.17.0.1",
            "driver.docker.os_type": "linux",
            "driver.docker.runtimes": "runc",
            "driver.docker.version": "24.0.7",
            "driver.docker.volumes.enabled": "true",
        }),
        "exec": driver(True, "Healthy", {"driver.exec": "true"}),
        "raw_exec": driver(False, "disabled", None),
    }


def fill_node(raw, position, load_ns):
    """Return a full Node from a partial one (ID, Name and Status are enough)."""
    node_id = raw["ID"]
    name = raw.get("Name") or "client-%d" % (position + 1)
    status = raw.get("Status", "ready")
    address = "10.0.%d.%d" % (1 + position // 250, 10 + position % 250)
    load_s = load_ns // 1_000_000_000
    stamp = rfc3339(load_ns - 86_400 * 1_000_000_000)

    events = [{
        "CreateIndex": 0,
        "Details": None,
        "Message": "Node registered",
        "Subsystem": "Cluster",
        "Timestamp": stamp,
    }]
    if status in ("down", "disconnected"):
        events.append({
            "CreateIndex": 0,
            "Details": None,
            "Message": "Node heartbeat missed",
            "Subsystem": "Cluster",
            "Timestamp": rfc3339(load_ns),
        })

    node = {
        "ID": node_id,
        "Name": name,
        "Datacenter": "dc1",
        "NodePool": "default",
        "NodeClass": "",
        "ComputedClass": "v1:%d" % stable_number(node_id, 10**17, 10**18),
        "HTTPAddr": "%s:4646" % address,
        "TLSEnabled": False,
        "Status": status,
        "StatusDescription": "",
        "StatusUpdatedAt": load_s,
        "SchedulingEligibility": "eligible" if status == "ready" else "ineligible",
        "Drain": False,
        "DrainStrategy": None,
        "LastDrain": None,
        "Events": events,
        "Drivers": default_drivers(stamp),
        "Attributes": {
            "cpu.arch": "amd64",
            "cpu.numcores": "8",
            "cpu.totalcompute": "32000",
            "driver.docker": "1",
            "driver.exec": "1",
            "kernel.name": "linux",
            "memory.totalbytes": "16571674624",
            "nomad.version": DEFAULT_VERSION,
            "os.name": "ubuntu",
            "os.version": "22.04",
            "unique.hostname": name,
            "unique.network.ip-address": address,
        },
        "Meta": {},
        "Links": {},
        "NodeResources": {
            "Cpu": {"CpuShares": 32000, "TotalCpuCores": 8, "ReservableCpuCores": None},
            "Memory": {"MemoryMB": 15803},
            "Disk": {"DiskMB": 50000},
            "Networks": [{
                "CIDR": "%s/32" % address,
                "Device": "eth0",
                "DynamicPorts": None,
                "IP": address,
                "MBits": 1000,
                "Mode": "host",
                "ReservedPorts": None,
            }],
            "NodeNetworks": None,
            "Devices": None,
            "MinDynamicPort": 20000,
            "MaxDynamicPort": 32000,
        },
        "ReservedResources": {
            "Cpu": {"CpuShares": 0},
            "Memory": {"MemoryMB": 0},
            "Disk": {"DiskMB": 0},
            "Networks": {"ReservedHostPorts": ""},
        },
        "HostVolumes": None,
        "HostNetworks": None,
        "NodeMaxAllocs": 0,
        "LastMissedHeartbeatIndex": 0,
        "LastAllocUpdateIndex": 0,
        "SecretID": "",
    }

    overrides = copy.deepcopy(raw)
    # "Version" is a scenario shortcut: Nomad's Node has no such field, and the
    # list stub's Version is Attributes["nomad.version"].
    version = overrides.pop("Version", None)
    # These objects merge key by key, so {"ReservedResources": {"Memory":
    # {"MemoryMB": 512}}} keeps the other defaults.
    for field in ("Attributes", "NodeResources", "ReservedResources"):
        if isinstance(overrides.get(field), dict):
            node[field] = deep_merge(node[field], overrides.pop(field))
    node.update(overrides)
    if version is not None:
        node["Attributes"] = dict(node.get("Attributes") or {}, **{"nomad.version": str(version)})
    node["Drain"] = node.get("DrainStrategy") is not None
    node["StatusUpdatedAt"] = relative_time(node.get("StatusUpdatedAt"), load_s)
    # The SecretID never leaves a real server.
    node["SecretID"] = ""
    return node


def node_stub(node, with_os, with_resources):
    stub = {
        "Address": node_ip(node),
        "ID": node["ID"],
        "Attributes": None,
        "Datacenter": node.get("Datacenter"),
        "Name": node.get("Name"),
        "NodeClass": node.get("NodeClass"),
        "NodePool": node.get("NodePool"),
        "Version": (node.get("Attributes") or {}).get("nomad.version", ""),
        "Drain": node.get("DrainStrategy") is not None,
        "SchedulingEligibility": node.get("SchedulingEligibility"),
        "Status": node.get("Status"),
        "StatusDescription": node.get("StatusDescription"),
        "Drivers": node.get("Drivers"),
        "HostVolumes": node.get("HostVolumes"),
        "LastDrain": node.get("LastDrain"),
        "CreateIndex": node["CreateIndex"],
        "ModifyIndex": node["ModifyIndex"],
    }
    if with_os:
        stub["Attributes"] = {"os.name": (node.get("Attributes") or {}).get("os.name", "")}
    if with_resources:
        stub["NodeResources"] = node.get("NodeResources")
        stub["ReservedResources"] = node.get("ReservedResources")
    return stub


def task_event(event_type, at_ns, message, exit_code=0, fails_task=False):
    return {
        "Details": {},
        "DiskLimit": 0,
        "DisplayMessage": message,
        "DownloadError": "",
        "DriverError": "",
        "DriverMessage": "",
        "ExitCode": exit_code,
        "FailedSibling": "",
        "FailsTask": fails_task,
        "GenericSource": "",
        "KillError": "",
        "KillReason": "",
        "KillTimeout": 0,
        "Message": message,
        "RestartReason": "",
        "SetupError": "",
        "Signal": 0,
        "StartDelay": 0,
        "TaskSignal": "",
        "TaskSignalReason": "",
        "Time": at_ns,
        "Type": event_type,
        "ValidationError": "",
        "VaultError": "",
    }


def task_state(client_status, create_ns, modify_ns):
    """Return a TaskState consistent with the alloc's ClientStatus."""
    events = [task_event("Received", create_ns, "Task received by client")]
    state = {
        "State": "pending",
        "Failed": False,
        "Restarts": 0,
        "LastRestart": None,
        "StartedAt": None,
        "FinishedAt": None,
        "Events": events,
        "TaskHandle": None,
    }
    if client_status == "pending":
        return state
    events.append(task_event("Started", create_ns + 2_000_000_000, "Task started by client"))
    state["State"] = "running"
    state["StartedAt"] = rfc3339(create_ns + 2_000_000_000)
    if client_status == "complete":
        events.append(task_event("Terminated", modify_ns, "Exit Code: 0"))
        state["State"] = "dead"
        state["FinishedAt"] = rfc3339(modify_ns)
    elif client_status == "failed":
        events.append(task_event("Terminated", modify_ns, "Exit Code: 1", exit_code=1))
        events.append(task_event("Not Restarting", modify_ns, "Error was unrecoverable",
                                 fails_task=True))
        state["State"] = "dead"
        state["Failed"] = True
        state["FinishedAt"] = rfc3339(modify_ns)
    # lost and unknown keep the last state the client reported (running).
    return state


def build_job(alloc, region, job_type, job_version, services_by_task, group_services):
    job_id = alloc["JobID"]
    tasks = []
    for task_name in sorted(services_by_task):
        tasks.append({
            "Name": task_name,
            "Driver": "docker",
            "User": "",
            "Config": {"image": "registry.example/%s:1.0" % job_id, "ports": []},
            "Env": None,
            "Services": [
                {"Name": name, "PortLabel": port, "Provider": "nomad", "Tags": [],
                 "Checks": None, "TaskName": ""}
                for name, port in services_by_task[task_name]
            ] or None,
            "Resources": {"CPU": 100, "MemoryMB": 256, "MemoryMaxMB": 0, "DiskMB": 0,
                          "Networks": None},
            "Lifecycle": None,
            "KillTimeout": 5_000_000_000,
            "ShutdownDelay": 0,
            "Leader": False,
        })
    group = {
        "Name": alloc["TaskGroup"],
        "Count": 1,
        "Constraints": None,
        "Affinities": None,
        "Spreads": None,
        "RestartPolicy": {"Attempts": 2, "Interval": 1_800_000_000_000,
                          "Delay": 15_000_000_000, "Mode": "fail", "RenderTemplates": False},
        "ReschedulePolicy": {"Attempts": 0, "Interval": 0, "Delay": 30_000_000_000,
                             "DelayFunction": "exponential", "MaxDelay": 3_600_000_000_000,
                             "Unlimited": True},
        "Disconnect": None,
        "MaxClientDisconnect": None,
        "StopAfterClientDisconnect": None,
        "PreventRescheduleOnLost": False,
        "Networks": [{"Mode": "bridge", "DynamicPorts": None, "ReservedPorts": None}],
        "Services": [
            {"Name": name, "PortLabel": port, "Provider": "nomad", "Tags": [],
             "Checks": None, "TaskName": ""}
            for name, port in group_services
        ] or None,
        "Tasks": tasks,
        "EphemeralDisk": {"Migrate": False, "SizeMB": 300, "Sticky": False},
        "Meta": None,
    }
    return {
        "Region": region,
        "Namespace": alloc["Namespace"],
        "ID": job_id,
        "ParentID": "",
        "Name": job_id,
        "Type": job_type,
        "Priority": 50,
        "AllAtOnce": False,
        "Datacenters": ["dc1"],
        "NodePool": "default",
        "Constraints": None,
        "Affinities": None,
        "Spreads": None,
        "TaskGroups": [group],
        "Update": {"Stagger": 30_000_000_000, "MaxParallel": 1},
        "Periodic": None,
        "ParameterizedJob": None,
        "Dispatched": False,
        "Payload": None,
        "Meta": None,
        "Stop": False,
        "Status": "running",
        "StatusDescription": "",
        "Stable": True,
        "Version": job_version,
        "SubmitTime": alloc["CreateTime"],
        # sync_job_indexes() sets these once the alloc has its own indexes.
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "JobModifyIndex": 0,
    }


def sync_job_indexes(alloc):
    """Give a generated Job the alloc's CreateIndex, as if the job was registered just before."""
    job = alloc.get("Job")
    if isinstance(job, dict) and job.get("CreateIndex") == 0:
        job["CreateIndex"] = job["ModifyIndex"] = job["JobModifyIndex"] = alloc["CreateIndex"]


# Fields of AllocListStub, in the order Go declares them.
ALLOC_STUB_FIELDS = (
    "ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID", "JobType",
    "JobVersion", "TaskGroup", "DesiredStatus", "DesiredDescription", "ClientStatus",
    "ClientDescription", "DesiredTransition", "TaskStates", "DeploymentStatus",
    "FollowupEvalID", "NextAllocation", "RescheduleTracker", "PreemptedAllocations",
    "PreemptedByAllocation", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime",
)


def fill_alloc(raw, nodes, registrations, region, load_ns):
    """Return a full Allocation from a partial one.

    ID, Namespace, NodeID, JobID, ClientStatus and DesiredStatus are enough. The
    embedded Job lists the tasks and services found in the registrations that
    point at this alloc, so Job and registrations agree.
    """
    alloc_id = raw["ID"]
    job_id = raw.get("JobID", "example")
    group = raw.get("TaskGroup") or job_id
    client_status = raw.get("ClientStatus", "running")
    create_ns = relative_time(raw.get("CreateTime"), load_ns)
    if create_ns is None:
        create_ns = load_ns - 3_600 * 1_000_000_000
    modify_ns = relative_time(raw.get("ModifyTime"), load_ns)
    if modify_ns is None:
        modify_ns = max(create_ns, load_ns - 600 * 1_000_000_000)

    services_by_task = {}
    group_services = []
    for reg in registrations:
        if reg.get("AllocID") != alloc_id:
            continue
        task, port = split_registration_id(reg.get("ID", ""), reg.get("ServiceName", ""))
        if task is None:
            continue
        if task.startswith("group-"):
            group_services.append((reg["ServiceName"], port))
        else:
            services_by_task.setdefault(task, []).append((reg["ServiceName"], port))
    if raw.get("TaskStates"):
        for task in raw["TaskStates"]:
            services_by_task.setdefault(task, [])
    if not services_by_task:
        services_by_task[group] = []

    node = nodes.get(raw.get("NodeID", ""))
    alloc = {
        "ID": alloc_id,
        "Namespace": raw.get("Namespace", "default"),
        "EvalID": stable_uuid("eval-for-" + alloc_id),
        "Name": "%s.%s[0]" % (job_id, group),
        "NodeID": raw.get("NodeID", ""),
        "NodeName": node.get("Name", "") if node else "",
        "JobID": job_id,
        "TaskGroup": group,
        "DesiredStatus": "stop" if client_status == "lost" else "run",
        "DesiredDescription": "",
        "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None,
                              "NoShutdownDelay": None},
        "ClientStatus": client_status,
        "ClientDescription": {
            "pending": "No tasks have started",
            "running": "Tasks are running",
            "complete": "All tasks have completed",
            "failed": "Failed tasks",
            "lost": "",
            "unknown": "",
        }.get(client_status, ""),
        "TaskStates": {
            task: task_state(client_status, create_ns, modify_ns) for task in services_by_task
        },
        "AllocStates": None,
        "PreviousAllocation": "",
        "NextAllocation": "",
        "DeploymentID": "",
        "DeploymentStatus": None,
        "RescheduleTracker": None,
        "NetworkStatus": {"InterfaceName": "eth0", "Address": "172.26.64.%d"
                          % stable_number(alloc_id, 2, 250), "AddressIPv6": "", "DNS": None},
        "FollowupEvalID": "",
        "PreemptedAllocations": None,
        "PreemptedByAllocation": "",
        "AllocatedResources": {
            "Tasks": {task: {"Cpu": {"CpuShares": 100, "ReservedCores": None},
                             "Memory": {"MemoryMB": 256, "MemoryMaxMB": 0},
                             "Networks": None, "Devices": None}
                      for task in services_by_task},
            "TaskLifecycles": {task: None for task in services_by_task},
            "Shared": {"DiskMB": 300, "Networks": None, "Ports": None},
        },
        "Metrics": {"NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1,
                    "NodesAvailable": {"dc1": 1}, "ClassFiltered": None,
                    "ConstraintFiltered": None, "NodesExhausted": 0, "ClassExhausted": None,
                    "DimensionExhausted": None, "QuotaExhausted": None, "ResourcesExhausted": None,
                    "ScoreMetaData": None, "AllocationTime": 41000, "CoalescedFailures": 0},
        "CreateTime": create_ns,
        "ModifyTime": modify_ns,
    }
    if client_status == "lost":
        alloc["DesiredDescription"] = "alloc is lost since its node is down"
    if client_status == "unknown":
        alloc["DesiredDescription"] = "alloc is unknown since its node is disconnected"

    # JobType and JobVersion are list-stub fields; the full alloc carries them in Job.
    overrides = {k: copy.deepcopy(v) for k, v in raw.items()
                 if k not in ("JobType", "JobVersion", "CreateTime", "ModifyTime")}
    alloc.update(overrides)
    if "Job" not in raw:
        alloc["Job"] = build_job(alloc, region, raw.get("JobType", "service"),
                                 raw.get("JobVersion", 0), services_by_task, group_services)
    return alloc


def alloc_stub(alloc, with_task_states, with_resources):
    job = alloc.get("Job") or {}
    stub = {}
    for field in ALLOC_STUB_FIELDS:
        if field == "JobType":
            stub[field] = job.get("Type", "")
        elif field == "JobVersion":
            stub[field] = job.get("Version", 0)
        else:
            stub[field] = alloc.get(field)
    if not with_task_states:
        # AllocListStub.TaskStates has no omitempty, so Nomad sends null.
        stub["TaskStates"] = None
    if with_resources:
        stub["AllocatedResources"] = alloc.get("AllocatedResources")
    return stub


# ClientStatus of an alloc -> its counter in a JobSummary's per-group summary.
SUMMARY_COUNTERS = {"pending": "Starting", "running": "Running", "complete": "Complete",
                    "failed": "Failed", "lost": "Lost", "unknown": "Unknown"}
# A task group's disconnect block as Nomad stores it (structs.DisconnectStrategy):
# LostAfter is a plain duration (0 when unset), StopOnClientAfter a pointer (null).
DEFAULT_DISCONNECT = {"LostAfter": 0, "StopOnClientAfter": None, "Replace": True,
                      "Reconcile": "best_score"}


def fill_task_group(raw, job_id, position, where):
    """Return a full TaskGroup from a partial one; raises ScenarioError naming the field.

    Disconnect, when given, merges over DEFAULT_DISCONNECT. Durations
    (LostAfter, StopOnClientAfter, MaxClientDisconnect,
    StopAfterClientDisconnect) are integer nanoseconds, as on the wire.
    """
    if not isinstance(raw, dict):
        raise ScenarioError("%s must be an object" % where)
    name = raw.get("Name") or (job_id if position == 0 else "%s-%d" % (job_id, position + 1))
    for field in ("LostAfter", "StopOnClientAfter"):
        value = (raw.get("Disconnect") or {}).get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ScenarioError("%s.Disconnect.%s must be nanoseconds (an integer) or null"
                                % (where, field))
    for field in ("MaxClientDisconnect", "StopAfterClientDisconnect"):
        value = raw.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ScenarioError("%s.%s must be nanoseconds (an integer) or null" % (where, field))
    group = {
        "Name": name,
        "Count": 1,
        "Constraints": None,
        "Affinities": None,
        "Spreads": None,
        "RestartPolicy": {"Attempts": 2, "Interval": 1_800_000_000_000,
                          "Delay": 15_000_000_000, "Mode": "fail", "RenderTemplates": False},
        "ReschedulePolicy": {"Attempts": 0, "Interval": 0, "Delay": 30_000_000_000,
                             "DelayFunction": "exponential", "MaxDelay": 3_600_000_000_000,
                             "Unlimited": True},
        "Disconnect": None,
        "MaxClientDisconnect": None,
        "StopAfterClientDisconnect": None,
        "PreventRescheduleOnLost": False,
        "Networks": None,
        "Services": None,
        "Tasks": [{
            "Name": name,
            "Driver": "docker",
            "User": "",
            "Config": {"image": "registry.example/%s:1.0" % job_id},
            "Env": None,
            "Services": None,
            "Resources": {"CPU": 100, "MemoryMB": 256, "MemoryMaxMB": 0, "DiskMB": 0,
                          "Networks": None},
            "Lifecycle": None,
            "KillTimeout": 5_000_000_000,
            "ShutdownDelay": 0,
            "Leader": False,
        }],
        "EphemeralDisk": {"Migrate": False, "SizeMB": 300, "Sticky": False},
        "Meta": None,
    }
    overrides = copy.deepcopy(raw)
    disconnect = overrides.pop("Disconnect", None)
    group.update(overrides)
    if isinstance(disconnect, dict):
        group["Disconnect"] = dict(DEFAULT_DISCONNECT, **disconnect)
    return group


def fill_job(raw, region, load_ns, where):
    """Return a full Job from a partial one (ID is enough); raises ScenarioError.

    TaskGroups defaults to one group named after the job; each group is
    filled by fill_task_group().
    """
    job_id = raw["ID"]
    raw_groups = raw.get("TaskGroups", [{}])
    if not isinstance(raw_groups, list):
        raise ScenarioError("%s.TaskGroups must be a JSON array" % where)
    groups = [fill_task_group(group, job_id, position, "%s.TaskGroups[%d]" % (where, position))
              for position, group in enumerate(raw_groups)]
    names = [group["Name"] for group in groups]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ScenarioError("%s: duplicate task group Name %s" % (where, ", ".join(duplicates)))
    job = {
        "Region": region,
        "Namespace": "default",
        "ID": job_id,
        "ParentID": "",
        "Name": job_id,
        "Type": "service",
        "Priority": 50,
        "AllAtOnce": False,
        "Datacenters": ["dc1"],
        "NodePool": "default",
        "Constraints": None,
        "Affinities": None,
        "Spreads": None,
        "Update": {"Stagger": 30_000_000_000, "MaxParallel": 1},
        "Periodic": None,
        "ParameterizedJob": None,
        "Dispatched": False,
        "Payload": None,
        "Meta": None,
        "Stop": False,
        "Status": "running",
        "StatusDescription": "",
        "Stable": True,
        "Version": 0,
        "SubmitTime": load_ns - 3_600 * 1_000_000_000,
    }
    overrides = {key: copy.deepcopy(value) for key, value in raw.items() if key != "TaskGroups"}
    job.update(overrides)
    job["TaskGroups"] = groups
    job["SubmitTime"] = relative_time(job.get("SubmitTime"), load_ns)
    return job


def job_stub(job, allocs):
    """Return a JobListStub, with a JobSummary counted from the allocs of that job."""
    summary = {group["Name"]: {"Queued": 0, "Complete": 0, "Failed": 0, "Running": 0,
                               "Starting": 0, "Lost": 0, "Unknown": 0}
               for group in job.get("TaskGroups") or []}
    for alloc in allocs:
        if alloc.get("Namespace") != job["Namespace"] or alloc.get("JobID") != job["ID"]:
            continue
        counters = summary.get(alloc.get("TaskGroup"))
        counter = SUMMARY_COUNTERS.get(alloc.get("ClientStatus"))
        if counters is not None and counter is not None:
            counters[counter] += 1
    return {
        "ID": job["ID"],
        "ParentID": job.get("ParentID", ""),
        "Name": job.get("Name"),
        "Namespace": job["Namespace"],
        "Datacenters": job.get("Datacenters"),
        "Multiregion": None,
        "Type": job.get("Type"),
        "Priority": job.get("Priority"),
        "Periodic": job.get("Periodic") is not None,
        "ParameterizedJob": job.get("ParameterizedJob") is not None,
        "Stop": job.get("Stop", False),
        "Status": job.get("Status"),
        "StatusDescription": job.get("StatusDescription", ""),
        "JobSummary": {
            "JobID": job["ID"],
            "Namespace": job["Namespace"],
            "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": job["CreateIndex"],
            "ModifyIndex": job["ModifyIndex"],
        },
        "CreateIndex": job["CreateIndex"],
        "ModifyIndex": job["ModifyIndex"],
        "JobModifyIndex": job["JobModifyIndex"],
        "SubmitTime": job.get("SubmitTime"),
        "Meta": job.get("Meta"),
        "NodePool": job.get("NodePool"),
    }


def fill_eval(raw, load_ns):
    eval_id = raw["ID"]
    create_ns = relative_time(raw.get("CreateTime"), load_ns)
    if create_ns is None:
        create_ns = load_ns - 3_600 * 1_000_000_000
    modify_ns = relative_time(raw.get("ModifyTime"), load_ns)
    if modify_ns is None:
        modify_ns = create_ns + 50_000_000
    evaluation = {
        "ID": eval_id,
        "Namespace": "default",
        "Priority": 50,
        "Type": "service",
        "TriggeredBy": "job-register",
        "JobID": "example",
        "JobModifyIndex": 0,
        "NodeID": "",
        "NodeModifyIndex": 0,
        "DeploymentID": "",
        "Status": "complete",
        "StatusDescription": "",
        "Wait": 0,
        "WaitUntil": None,
        "NextEval": "",
        "PreviousEval": "",
        "BlockedEval": "",
        "RelatedEvals": None,
        "FailedTGAllocs": None,
        "ClassEligibility": None,
        "QuotaLimitReached": "",
        "EscapedComputedClass": False,
        "AnnotatePlan": False,
        "QueuedAllocations": {},
        "LeaderACL": "",
        "SnapshotIndex": 0,
    }
    evaluation.update(copy.deepcopy(raw))
    evaluation["CreateTime"] = create_ns
    evaluation["ModifyTime"] = modify_ns
    return evaluation


def fill_registration(raw, allocs, nodes):
    alloc = allocs.get(raw.get("AllocID", ""))
    node_id = raw.get("NodeID") or (alloc.get("NodeID", "") if alloc else "")
    node = nodes.get(node_id)
    reg = {
        "ID": raw["ID"],
        "ServiceName": raw.get("ServiceName", ""),
        "Namespace": raw.get("Namespace", "default"),
        "NodeID": node_id,
        "Datacenter": node.get("Datacenter", "dc1") if node else "dc1",
        "JobID": alloc.get("JobID", "example") if alloc else "example",
        "AllocID": raw.get("AllocID", ""),
        "Tags": [],
        "Address": node_ip(node) if node else "127.0.0.1",
        "Port": stable_number(raw["ID"], 20000, 32000),
    }
    reg.update(copy.deepcopy(raw))
    return reg


def default_raft(leader):
    address = leader or DEFAULT_LEADER
    return {
        "Index": 0,
        "Servers": [{
            "Address": address,
            "ID": DEFAULT_SERVER_ID,
            "Leader": bool(leader),
            "Node": "server-1.global",
            "RaftProtocol": "3",
            "Voter": True,
        }],
    }


def default_autopilot(raft, leader):
    servers = []
    leader_id = ""
    for server in raft.get("Servers", []):
        is_leader = bool(leader) and server.get("Address") == leader
        if is_leader:
            leader_id = server.get("ID", "")
        servers.append({
            "ID": server.get("ID", ""),
            "Name": server.get("Node", ""),
            "Address": server.get("Address", ""),
            "SerfStatus": "alive",
            "Version": DEFAULT_VERSION,
            "Leader": is_leader,
            "LastContact": "0s" if is_leader else "12.5ms",
            "LastTerm": 2,
            "LastIndex": 46,
            "Healthy": True,
            "Voter": server.get("Voter", True),
            "StableSince": "2024-01-01T00:00:00Z",
        })
    return {
        "Healthy": True,
        "FailureTolerance": max(0, (len(servers) - 1) // 2),
        "Servers": servers,
        "Leader": leader_id,
        "Voters": [s["ID"] for s in servers if s["Voter"]],
    }


def default_scheduler():
    return {
        "SchedulerAlgorithm": "binpack",
        "MemoryOversubscriptionEnabled": False,
        "RejectJobRegistration": False,
        "PauseEvalBroker": False,
        "PreemptionConfig": {
            "SystemSchedulerEnabled": True,
            "SysBatchSchedulerEnabled": False,
            "BatchSchedulerEnabled": False,
            "ServiceSchedulerEnabled": False,
        },
        "CreateIndex": 5,
        "ModifyIndex": 5,
    }


def default_members(region):
    return {
        "ServerName": "server-1",
        "ServerRegion": region,
        "ServerDC": "dc1",
        "Members": [{
            "Name": "server-1.%s" % region,
            "Addr": "127.0.0.1",
            "Port": 4648,
            "Tags": {
                "role": "nomad", "region": region, "dc": "dc1", "vsn": "1", "mvn": "1",
                "build": DEFAULT_VERSION, "port": "4647", "bootstrap": "1", "rpc_addr": "127.0.0.1",
            },
            "Status": "alive",
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        }],
    }


def default_agent_self(region, leader, acl_enabled, members):
    member = copy.deepcopy(members["Members"][0]) if members.get("Members") else {}
    return {
        "config": {
            "ACL": {"Enabled": acl_enabled},
            "Addresses": {"HTTP": "127.0.0.1", "RPC": "127.0.0.1", "Serf": "127.0.0.1"},
            "AdvertiseAddrs": {"HTTP": "127.0.0.1:4646", "RPC": "127.0.0.1:4647",
                               "Serf": "127.0.0.1:4648"},
            "BindAddr": "127.0.0.1",
            "Client": {"Enabled": False},
            "DataDir": "/opt/nomad/data",
            "Datacenter": "dc1",
            "LogLevel": "INFO",
            "NodeName": "server-1",
            "Ports": {"HTTP": 4646, "RPC": 4647, "Serf": 4648},
            "Region": region,
            # Heartbeat settings are Go durations (integer ns) and a float; 0
            # means "not set", so the server uses its defaults (10s, 10s, 50).
            "Server": {"Enabled": True, "BootstrapExpect": 1, "HeartbeatGrace": 0,
                       "MinHeartbeatTTL": 0, "MaxHeartbeatsPerSecond": 0,
                       "FailoverHeartbeatTTL": 0},
            "Version": {"Revision": "", "Version": DEFAULT_VERSION,
                        "VersionMetadata": "", "VersionPrerelease": ""},
        },
        "member": member,
        "stats": {
            "nomad": {
                "server": "true",
                "leader": "true" if leader == DEFAULT_LEADER else "false",
                "leader_addr": leader,
                "bootstrap": "true",
                "known_regions": "1",
            },
            "raft": {
                "state": "Leader" if leader == DEFAULT_LEADER else "Follower",
                "applied_index": "0",
                "commit_index": "0",
                "last_contact": "never" if leader == DEFAULT_LEADER else "0",
                "num_peers": "0",
                "term": "2",
            },
            "runtime": {"arch": "amd64", "cpu_count": "8", "goroutines": "120",
                        "kernel.name": "linux", "max_procs": "8", "version": "go1.22.7"},
            "serf": {"failed": "0", "left": "0", "members": "1", "health_score": "0",
                     "encrypted": "false"},
        },
    }


# ---------------------------------------------------------------------------
# Servers (scenario key "servers")


def fill_server(raw, position):
    """Return the record of one scenario server; raises ScenarioError naming the field.

    Port is the RPC port, which the leader address and Raft peers use; SerfPort
    is the gossip port that /v1/agent/members reports.
    """
    where = "scenario servers[%d]" % position
    if not isinstance(raw, dict):
        raise ScenarioError("%s must be an object" % where)
    name = raw.get("Name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("%s is missing Name" % where)
    status = raw.get("Status", "alive")
    if status not in SERVER_STATUSES:
        raise ScenarioError("%s.Status %r is invalid; use one of %s"
                            % (where, status, ", ".join(SERVER_STATUSES)))
    for field in ("Voter", "Healthy", "Leader"):
        if field in raw and not isinstance(raw[field], bool):
            raise ScenarioError("%s.%s must be true or false" % (where, field))
    for field, default in (("Port", DEFAULT_RPC_PORT), ("SerfPort", DEFAULT_SERF_PORT)):
        value = raw.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise ScenarioError("%s.%s must be a TCP port number" % (where, field))
    node_id = raw.get("node_id")
    if node_id is not None and not isinstance(node_id, str):
        raise ScenarioError("%s.node_id must be a node ID string" % where)
    in_raft = raw.get("in_raft", True)
    if not isinstance(in_raft, bool):
        raise ScenarioError("%s.in_raft must be true or false" % where)
    if not in_raft and raw.get("Leader"):
        raise ScenarioError("%s: a server outside the Raft configuration (in_raft false) "
                            "cannot be Leader" % where)
    return {
        "Name": name,
        "ID": raw.get("ID") or stable_uuid("server/" + name),
        "Addr": raw.get("Addr") or "10.0.0.%d" % (position + 1),
        "Port": raw.get("Port", DEFAULT_RPC_PORT),
        "SerfPort": raw.get("SerfPort", DEFAULT_SERF_PORT),
        "Datacenter": raw.get("Datacenter", "dc1"),
        "Version": raw.get("Version", DEFAULT_VERSION),
        "Status": status,
        "Voter": raw.get("Voter", True),
        "Healthy": raw.get("Healthy", True),
        "Leader": raw.get("Leader", False),
        "node_id": node_id or None,
        "in_raft": in_raft,
        "restart": parse_restart(raw.get("_restart"), where + "._restart"),
        # Internal: when the server last turned healthy or unhealthy (Unix
        # seconds), and the Raft position it had reached at that moment.
        "changed_at": time.time(),
        "last_index": None,
        "last_term": None,
    }


def server_public(server):
    """Return a server record in scenario form (loadable again)."""
    public = {field: server[field] for field in ("Name", "ID", "Addr", "Port", "SerfPort",
                                                 "Datacenter", "Version", "Status", "Voter",
                                                 "Healthy", "Leader")}
    if server["node_id"]:
        public["node_id"] = server["node_id"]
    if not server["in_raft"]:
        public["in_raft"] = False
    if server["restart"] is not None:
        public["_restart"] = dict(server["restart"])
    return public


def server_ok(server):
    return server["Status"] == "alive" and server["Healthy"]


def rpc_address(server):
    return "%s:%d" % (server["Addr"], server["Port"])


def serf_member(server, region, voters):
    return {
        "Name": "%s.%s" % (server["Name"], region),
        "Addr": server["Addr"],
        "Port": server["SerfPort"],
        "Tags": {
            "role": "nomad", "region": region, "dc": server["Datacenter"], "vsn": "1",
            "mvn": "1", "build": server["Version"], "port": str(server["Port"]),
            "rpc_addr": server["Addr"], "raft_vsn": "3", "id": server["ID"],
            "expect": str(voters),
        },
        "Status": server["Status"],
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


# ---------------------------------------------------------------------------
# Variables and locks


def variable_path_error(path):
    """Return why path is not a valid variable path, or None (rules of Nomad's ValidatePath)."""
    if not path:
        return "variable requires path"
    if not VARIABLE_PATH.fullmatch(path):
        return "invalid path %s" % json.dumps(path)
    parts = path.split("/")
    if parts[0] != "nomad":
        return None
    if len(parts) >= 2 and parts[1] in ("jobs", "sentinel"):
        return None
    if len(parts) == 3 and parts[1] == "job-templates":
        return None
    # NOTE: Nomad rejects these with longer messages that name the allowed paths.
    return ("invalid path %s: below \"nomad/\" only nomad/jobs, nomad/sentinel and "
            "nomad/job-templates/<name> are allowed" % json.dumps(path))


def items_size(items):
    """Return the summed UTF-8 length of item keys and values, as Nomad counts it."""
    return sum(len(key.encode("utf-8")) + len(value.encode("utf-8"))
               for key, value in (items or {}).items())


def lock_json(lock):
    """Return a lock as Nomad marshals it: durations as Go duration strings."""
    return {"TTL": format_go_duration(lock["TTL"]),
            "LockDelay": format_go_duration(lock["LockDelay"]),
            "ID": lock["ID"]}


def variable_metadata(var):
    """Return a VariableMetadata body (list entries, renew and release replies)."""
    body = {"Namespace": var["Namespace"], "Path": var["Path"]}
    if var.get("Lock"):
        body["Lock"] = dict(var["Lock"])
    body["CreateIndex"] = var["CreateIndex"]
    body["CreateTime"] = var["CreateTime"]
    body["ModifyIndex"] = var["ModifyIndex"]
    body["ModifyTime"] = var["ModifyTime"]
    return body


def variable_json(var, items):
    """Return a full variable body; Items is left out when empty, as Go's omitempty does."""
    body = variable_metadata(var)
    if items:
        body["Items"] = dict(items)
    return body


def zero_variable(namespace, path):
    """Return the zero-valued variable that Nomad sends in a 409 when the real one is absent."""
    return {"Namespace": namespace, "Path": path, "CreateIndex": 0, "CreateTime": 0,
            "ModifyIndex": 0, "ModifyTime": 0}


def go_json_type(value):
    """Return the JSON type name Go's encoding/json uses in unmarshal errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def json_field(obj, name):
    """Return obj's value for name; keys match case-insensitively, as in Go's encoding/json."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def lock_duration(value):
    """Return seconds from a lock TTL or LockDelay: a Go duration string or nanoseconds.

    Absent, empty, null and values of other JSON types count as 0 (the
    default applies), as in Nomad's VariableLock.UnmarshalJSON.
    """
    if isinstance(value, str):
        if value == "":
            return 0.0
        try:
            return parse_go_duration(value)
        except ValueError:
            raise HttpError(400, "time: invalid duration %s" % json.dumps(value)) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value) / 1e9
    return 0.0


def decode_variable_request(body):
    """Parse a variable write body into {"Namespace", "Items", "Lock"}; raises HttpError 400.

    Items is None when absent or null; Lock is None or {"ID", "TTL", "LockDelay"}
    with durations in seconds (0 when not given).
    """
    if not body:
        raise HttpError(400, "Request body is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise HttpError(400, "invalid JSON in request body: %s" % err) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise HttpError(400, "json: cannot unmarshal %s into Go value of type "
                             "structs.VariableDecrypted" % go_json_type(doc))

    namespace = json_field(doc, "Namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise HttpError(400, "json: cannot unmarshal %s into Go struct field "
                             "VariableDecrypted.Namespace of type string" % go_json_type(namespace))

    items = json_field(doc, "Items")
    if items is not None:
        if not isinstance(items, dict):
            raise HttpError(400, "json: cannot unmarshal %s into Go struct field "
                                 "VariableDecrypted.Items of type structs.VariableItems"
                            % go_json_type(items))
        for value in items.values():
            if not isinstance(value, str):
                raise HttpError(400, "json: cannot unmarshal %s into Go struct field "
                                     "VariableDecrypted.Items of type string" % go_json_type(value))

    lock = json_field(doc, "Lock")
    parsed_lock = None
    if lock is not None:
        if not isinstance(lock, dict):
            raise HttpError(400, "json: cannot unmarshal %s into Go struct field "
                                 "VariableDecrypted.Lock of type structs.VariableLock"
                            % go_json_type(lock))
        lock_id = json_field(lock, "ID")
        if lock_id is not None and not isinstance(lock_id, str):
            raise HttpError(400, "json: cannot unmarshal %s into Go struct field "
                                 "VariableLock.ID of type string" % go_json_type(lock_id))
        parsed_lock = {"ID": lock_id or "",
                       "TTL": lock_duration(json_field(lock, "TTL")),
                       "LockDelay": lock_duration(json_field(lock, "LockDelay"))}
    return {"Namespace": namespace or "", "Items": items, "Lock": parsed_lock}


def canonical_lock(lock):
    """Fill a requested lock as Nomad does: a new ID when none is given, 15 s defaults for zeros."""
    return {"ID": lock["ID"] or str(uuid.uuid4()),
            "TTL": lock["TTL"] or DEFAULT_LOCK_TTL_S,
            "LockDelay": lock["LockDelay"] or DEFAULT_LOCK_DELAY_S}


def lock_problems(lock, min_ttl_s):
    """Return Nomad's complaints about a canonical lock's TTL and LockDelay (empty when valid)."""
    problems = []
    if lock["TTL"] < 0 or lock["LockDelay"] < 0:
        problems.append("Lock delay and TTL must be positive")
    if lock["TTL"] > MAX_LOCK_TTL_S or lock["TTL"] < min_ttl_s:
        problems.append("TTL must be between %g seconds and 24 hours" % min_ttl_s)
    return problems


def fill_variable(raw, position, load_ns, min_ttl_s):
    """Return (variable, lock settings or None) from a scenario entry; raises ScenarioError.

    Items may be empty, as they are for a variable that lock-acquire created.
    """
    where = "scenario variables[%d]" % position
    if not isinstance(raw, dict):
        raise ScenarioError("%s must be an object" % where)
    namespace = raw.get("Namespace") or "default"
    path = raw.get("Path")
    if not isinstance(namespace, str) or namespace == "*":
        raise ScenarioError("%s.Namespace must be a namespace name" % where)
    if not isinstance(path, str) or variable_path_error(path):
        raise ScenarioError("%s.Path %r is invalid: %s"
                            % (where, path, variable_path_error(path if isinstance(path, str)
                                                                else "")))
    items = raw.get("Items") or {}
    if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
        raise ScenarioError("%s.Items must be an object of string values" % where)
    lock = None
    if raw.get("Lock"):
        source = raw["Lock"]
        if not isinstance(source, dict):
            raise ScenarioError("%s.Lock must be an object" % where)
        try:
            lock = canonical_lock({"ID": source.get("ID") or "",
                                   "TTL": lock_duration(source.get("TTL")),
                                   "LockDelay": lock_duration(source.get("LockDelay"))})
        except HttpError as err:
            raise ScenarioError("%s.Lock: %s" % (where, err.text)) from None
        problems = lock_problems(lock, min_ttl_s)
        if problems:
            raise ScenarioError("%s.Lock: %s" % (where, "; ".join(problems)))
    if items_size(items) > MAX_VARIABLE_SIZE:
        raise ScenarioError("%s.Items exceed %d bytes" % (where, MAX_VARIABLE_SIZE))
    create_ns = relative_time(raw.get("CreateTime"), load_ns)
    if create_ns is None:
        create_ns = load_ns
    modify_ns = relative_time(raw.get("ModifyTime"), load_ns)
    var = {
        "Namespace": namespace,
        "Path": path,
        "Lock": lock_json(lock) if lock else None,
        "CreateTime": create_ns,
        "ModifyTime": create_ns if modify_ns is None else modify_ns,
        "Items": dict(items),
    }
    for field in ("CreateIndex", "ModifyIndex"):
        if field in raw:
            var[field] = int(raw[field])
    return var, lock


# ---------------------------------------------------------------------------
# Restart behaviour and timelines


def parse_restart(raw, where):
    """Return a restart behaviour from a scenario "_restart" value; None means DEFAULT_RESTART."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ScenarioError("%s must be an object such as {\"ready_after_s\": 2}" % where)
    unknown = set(raw) - set(RESTART_KEYS)
    if unknown:
        raise ScenarioError("%s has unknown keys %s; allowed: %s"
                            % (where, sorted(unknown), ", ".join(RESTART_KEYS)))
    if "never" in raw:
        if raw["never"] is not True or len(raw) > 1:
            raise ScenarioError("%s: \"never\" must be true and the only key" % where)
        return {"never": True}
    if not raw:
        raise ScenarioError("%s needs ready_after_s, ready_after_ticks or never" % where)
    behaviour = {}
    if "ready_after_s" in raw:
        value = raw["ready_after_s"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ScenarioError("%s.ready_after_s must be a number of seconds >= 0" % where)
        behaviour["ready_after_s"] = float(value)
    if "ready_after_ticks" in raw:
        value = raw["ready_after_ticks"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScenarioError("%s.ready_after_ticks must be an integer >= 0" % where)
        behaviour["ready_after_ticks"] = value
    return behaviour


def parse_timeline(entries):
    """Return timeline entries as {"at_s", "at_tick", "op", "position"}; raises ScenarioError.

    An entry is {"at_s"|"at_tick": N, "op": {<mutate operation>}}, or the
    operation's fields inline: {"at_tick": 2, "op": "set_node_status", "id": ...}.
    """
    if not isinstance(entries, list):
        raise ScenarioError("scenario timeline must be a JSON array")
    parsed = []
    for position, entry in enumerate(entries):
        where = "scenario timeline[%d]" % position
        if not isinstance(entry, dict):
            raise ScenarioError("%s must be an object" % where)
        if ("at_s" in entry) == ("at_tick" in entry):
            raise ScenarioError("%s needs exactly one of at_s (seconds after load) and at_tick "
                                "(tick number)" % where)
        at_s = entry.get("at_s")
        at_tick = entry.get("at_tick")
        if at_s is not None and (isinstance(at_s, bool) or not isinstance(at_s, (int, float))
                                 or at_s < 0):
            raise ScenarioError("%s.at_s must be a number of seconds >= 0" % where)
        if "at_tick" in entry and (isinstance(at_tick, bool) or not isinstance(at_tick, int)
                                   or at_tick < 0):
            raise ScenarioError("%s.at_tick must be an integer >= 0" % where)
        op = entry.get("op")
        if isinstance(op, dict):
            operation = copy.deepcopy(op)
        elif isinstance(op, str):
            operation = {key: copy.deepcopy(value) for key, value in entry.items()
                         if key not in ("at_s", "at_tick")}
        else:
            raise ScenarioError("%s.op must be a mutate operation object or an op name" % where)
        if operation.get("op") not in MUTATION_OPS:
            raise ScenarioError("%s: unknown op %r; tests/fake_nomad/README.md lists the operations"
                                % (where, operation.get("op")))
        parsed.append({"at_s": None if at_s is None else float(at_s),
                       "at_tick": at_tick if "at_tick" in entry else None,
                       "op": operation, "position": position})
    return parsed


# ---------------------------------------------------------------------------
# Cluster state


class ScenarioError(ValueError):
    """A scenario or mutation that cannot be applied; the message names the value."""


def require_objects(scenario, key, required):
    items = scenario.get(key, [])
    if not isinstance(items, list):
        raise ScenarioError("scenario %r must be a JSON array, got %s"
                            % (key, type(items).__name__))
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScenarioError("scenario %s[%d] must be an object" % (key, position))
        for field in required:
            if not item.get(field):
                raise ScenarioError("scenario %s[%d] is missing %s" % (key, position, field))
    return items


class ClusterState:
    """Tables, indexes and cluster-wide settings, guarded by one condition variable.

    Every write bumps the global Raft index and sets the modify index of the
    tables it touched to that value; blocking queries wait on `cond`. The
    condition's lock is reentrant, so a method that holds it may call others
    that take it again. Timeline entries, restart recoveries and lock expiry
    run from run_due(), which the scheduler thread and every request call.
    """

    TABLES = ("nodes", "allocs", "evals", "services", "vars", "jobs")

    def __init__(self):
        self.cond = threading.Condition()
        self.generation = 0
        self.stopping = False
        self.load({})

    # -- loading ----------------------------------------------------------

    def load(self, scenario):
        """Replace all state with scenario. Raises ScenarioError on invalid input.

        Loading also resets the tick counter, the timeline, pending restart
        recoveries, lock timers and the list of recorded restarts.
        """
        if not isinstance(scenario, dict):
            raise ScenarioError("scenario must be a JSON object")
        raw_nodes = require_objects(scenario, "nodes", ("ID",))
        raw_allocs = require_objects(scenario, "allocations", ("ID",))
        raw_evals = require_objects(scenario, "evaluations", ("ID",))
        raw_regs = require_objects(scenario, "services", ("ID", "ServiceName"))
        raw_jobs = require_objects(scenario, "jobs", ("ID",))
        raw_vars = scenario.get("variables", [])
        if not isinstance(raw_vars, list):
            raise ScenarioError("scenario \"variables\" must be a JSON array")
        load_ns = now_ns()
        region = scenario.get("region", "global")
        leader = scenario.get("leader", None)
        lock_min_ttl_s = self.positive_setting(scenario, "lock_min_ttl_s", MIN_LOCK_TTL_S)
        lock_ttl_factor = self.positive_setting(scenario, "lock_ttl_factor", LOCK_TTL_FACTOR)
        timeline = parse_timeline(scenario.get("timeline", []))

        servers = None
        if scenario.get("servers") is not None:
            servers = self.load_servers(scenario["servers"])
            derived = self.leader_address(servers)
            if leader is not None and leader != derived:
                raise ScenarioError(
                    "scenario \"leader\" %r disagrees with \"servers\", whose leader is %r; "
                    "mark the leader with \"Leader\": true in servers and drop \"leader\""
                    % (leader, derived))
            leader = derived

        raft = deep_merge(default_raft(DEFAULT_LEADER if leader is None else leader),
                          scenario.get("raft", {}))
        if leader is None:
            leader = next((s.get("Address", "") for s in raft.get("Servers", [])
                           if s.get("Leader")), DEFAULT_LEADER)
        for server in raft.get("Servers", []):
            server["Leader"] = bool(leader) and server.get("Address") == leader

        next_index = 10

        def assign_indexes(obj):
            nonlocal next_index
            if "CreateIndex" not in obj:
                obj["CreateIndex"] = next_index
                next_index += 1
            if "ModifyIndex" not in obj:
                obj["ModifyIndex"] = obj["CreateIndex"]

        nodes = {}
        node_restart = {}
        explicit_eligibility = set()
        for position, raw in enumerate(raw_nodes):
            # Keys starting with "_" configure this server and never reach a client.
            clean = {key: value for key, value in raw.items() if not key.startswith("_")}
            behaviour = parse_restart(raw.get("_restart"), "scenario nodes[%d]._restart" % position)
            node = fill_node(clean, position, load_ns)
            assign_indexes(node)
            nodes[node["ID"]] = node
            if behaviour is not None:
                node_restart[node["ID"]] = behaviour
            if "SchedulingEligibility" in clean:
                explicit_eligibility.add(node["ID"])
        evals = {}
        for raw in raw_evals:
            evaluation = fill_eval(raw, load_ns)
            assign_indexes(evaluation)
            evals[evaluation["ID"]] = evaluation
        allocs = {}
        # fill_alloc looks only at the registrations of its own alloc.
        regs_by_alloc = {}
        for raw in raw_regs:
            regs_by_alloc.setdefault(raw.get("AllocID", ""), []).append(raw)
        for raw in raw_allocs:
            alloc = fill_alloc(raw, nodes, regs_by_alloc.get(raw["ID"], ()), region, load_ns)
            assign_indexes(alloc)
            alloc.setdefault("AllocModifyIndex", alloc["CreateIndex"])
            sync_job_indexes(alloc)
            allocs[alloc["ID"]] = alloc
        services = {}
        for raw in raw_regs:
            reg = fill_registration(raw, allocs, nodes)
            assign_indexes(reg)
            key = (reg["Namespace"], reg["ID"])
            if key in services:
                raise ScenarioError("scenario services: duplicate registration %s in namespace %s"
                                    % (reg["ID"], reg["Namespace"]))
            services[key] = reg
        jobs = {}
        for position, raw in enumerate(raw_jobs):
            job = fill_job(raw, region, load_ns, "scenario jobs[%d]" % position)
            assign_indexes(job)
            job.setdefault("JobModifyIndex", job["CreateIndex"])
            key = (job["Namespace"], job["ID"])
            if key in jobs:
                raise ScenarioError("scenario jobs: duplicate job %s in namespace %s"
                                    % (job["ID"], job["Namespace"]))
            jobs[key] = job
        variables = {}
        var_locks = {}
        for position, raw in enumerate(raw_vars):
            var, lock = fill_variable(raw, position, load_ns, lock_min_ttl_s)
            assign_indexes(var)
            key = (var["Namespace"], var["Path"])
            if key in variables:
                raise ScenarioError("scenario variables: duplicate path %s in namespace %s"
                                    % (var["Path"], var["Namespace"]))
            variables[key] = var
            if lock is not None:
                var_locks[key] = lock

        namespaces = scenario.get("namespaces")
        if namespaces is None:
            namespaces = sorted({"default"}
                                | {a["Namespace"] for a in allocs.values()}
                                | {e["Namespace"] for e in evals.values()}
                                | {r["Namespace"] for r in services.values()}
                                | {j["Namespace"] for j in jobs.values()}
                                | {v["Namespace"] for v in variables.values()})

        tables = {"nodes": nodes, "allocs": allocs, "evals": evals, "services": services,
                  "vars": variables, "jobs": jobs}
        table_index = {}
        highest = next_index - 1
        for name, table in tables.items():
            top = max((obj["ModifyIndex"] for obj in table.values()), default=1)
            table_index[name] = max(top, 1)
            highest = max(highest, top,
                          max((obj["CreateIndex"] for obj in table.values()), default=0))
        members = deep_merge(default_members(region), scenario.get("members", {}))
        acl_token = scenario.get("acl_token") or None

        with self.cond:
            self.region = region
            self.leader = leader
            self.known_leader = bool(scenario.get("known_leader", True))
            self.last_contact_ms = int(scenario.get("last_contact_ms", 0))
            self.no_leader_delay_s = int(scenario.get("no_leader_delay_ms", 0)) / 1000.0
            self.acl_token = acl_token
            self.namespaces = list(namespaces)
            self.nodes = nodes
            self.allocs = allocs
            self.evals = evals
            self.services = services
            self.variables = variables
            self.jobs = jobs
            self.table_index = table_index
            self.index = max(int(scenario.get("index", 0)), highest)
            self.raft = raft
            self.autopilot = deep_merge(default_autopilot(raft, leader),
                                        scenario.get("autopilot", {}))
            self.autopilot_healthy_pin = None
            self.scheduler = deep_merge(default_scheduler(), scenario.get("scheduler", {}))
            self.members = members
            self.agent_self = deep_merge(
                default_agent_self(region, leader, acl_token is not None, members),
                scenario.get("agent_self", {}))

            self.servers = servers
            self.auto_elect = bool(scenario.get("auto_elect", True))
            self.raft_term = 2
            self.server_overrides = {name: scenario.get(name, {})
                                     for name in ("raft", "autopilot", "members", "agent_self")}

            self.node_restart = node_restart
            self.explicit_eligibility = explicit_eligibility
            self.lock_min_ttl_s = lock_min_ttl_s
            self.lock_ttl_factor = lock_ttl_factor
            self.locks = {}
            self.loaded_at = time.monotonic()
            self.tick = 0
            self.pending = []
            self.pending_order = 0
            self.restarts = []
            self.timeline_applied = []
            self.timeline_errors = []
            for key, lock in var_locks.items():
                self.start_lock_timer(key, lock)
            for entry in timeline:
                self.schedule({"kind": "timeline", "entry": entry},
                              due_time=None if entry["at_s"] is None
                              else self.loaded_at + entry["at_s"],
                              due_tick=entry["at_tick"])

            self.generation += 1
            self.cond.notify_all()
            self.run_due()

    @staticmethod
    def positive_setting(scenario, name, default):
        value = scenario.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ScenarioError("scenario %s must be a positive number, got %r" % (name, value))
        return float(value)

    @staticmethod
    def load_servers(raw_servers):
        if not isinstance(raw_servers, list):
            raise ScenarioError("scenario \"servers\" must be a JSON array")
        servers = [fill_server(raw, position) for position, raw in enumerate(raw_servers)]
        names = [s["Name"] for s in servers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ScenarioError("scenario servers: duplicate Name %s" % ", ".join(duplicates))
        flagged = [s["Name"] for s in servers if s["Leader"]]
        if len(flagged) > 1:
            raise ScenarioError("scenario servers: %s are all marked Leader; mark at most one"
                                % ", ".join(flagged))
        return servers

    # -- inspection -------------------------------------------------------

    def to_json(self):
        """Return the current state in scenario form (loadable again), plus indexes.

        The timeline and restart bookkeeping are reported under keys that
        load() ignores ("tick", "restarts", "timeline_applied", ...), so a
        reload starts a fresh timeline only when the caller adds one.
        """
        with self.cond:
            state = {
                "region": self.region,
                "leader": self.leader,
                "known_leader": self.known_leader,
                "last_contact_ms": self.last_contact_ms,
                "acl_enabled": self.acl_token is not None,
                "index": self.index,
                "table_index": dict(self.table_index),
                "namespaces": list(self.namespaces),
                "nodes": sorted(self.nodes.values(), key=lambda n: n["ID"]),
                "allocations": sorted(self.allocs.values(),
                                      key=lambda a: (a["CreateIndex"], a["ID"])),
                "evaluations": sorted(self.evals.values(),
                                      key=lambda e: (e["CreateIndex"], e["ID"])),
                "services": sorted(self.services.values(),
                                   key=lambda r: (r["Namespace"], r["ID"])),
                "variables": [variable_json(var, var["Items"]) for _, var
                              in sorted(self.variables.items())],
                "jobs": [job for _, job in sorted(self.jobs.items())],
                "scheduler": self.scheduler,
                "lock_min_ttl_s": self.lock_min_ttl_s,
                "lock_ttl_factor": self.lock_ttl_factor,
                "tick": self.tick,
                "restarts": copy.deepcopy(self.restarts),
                "timeline_applied": copy.deepcopy(self.timeline_applied),
                "timeline_errors": copy.deepcopy(self.timeline_errors),
            }
            state["nodes"] = [dict(n, _restart=dict(self.node_restart[n["ID"]]))
                              if n["ID"] in self.node_restart else n for n in state["nodes"]]
            if self.servers is None:
                state["raft"] = self.raft
                state["autopilot"] = self.autopilot
            else:
                # raft and autopilot follow from "servers"; a reload recomputes them.
                state["servers"] = [server_public(s) for s in self.servers]
                state["auto_elect"] = self.auto_elect
            return state

    # -- servers -------------------------------------------------------------
    # Without a "servers" scenario key the leader, Raft configuration,
    # autopilot health and members are the static objects built by load().
    # With it they are views computed from the server records on each request.

    @staticmethod
    def leader_address(servers):
        for server in servers:
            if server["Leader"] and server["Status"] == "alive":
                return rpc_address(server)
        return ""

    def leader_server(self):
        for server in self.servers or []:
            if server["Leader"] and server["Status"] == "alive":
                return server
        return None

    def answering_server(self):
        """Return the server this test server plays: the leader, else the first alive one.

        With no server alive it is the first server.
        """
        if not self.servers:
            return None
        return (self.leader_server()
                or next((s for s in self.servers if s["Status"] == "alive"), None)
                or self.servers[0])

    def raft_members(self):
        """Return the servers in the Raft configuration: all that have not left.

        A server with in_raft false is a gossip member that never joined Raft.
        """
        return [s for s in self.servers if s["Status"] != "left" and s["in_raft"]]

    def quorum_size(self):
        voters = [s for s in self.raft_members() if s["Voter"]]
        return len(voters) // 2 + 1

    def raft_view(self):
        if self.servers is None:
            return self.raft
        leader = self.leader_server()
        view = {"Index": 0, "Servers": [{
            "Address": rpc_address(s),
            "ID": s["ID"],
            "Leader": s is leader,
            "Node": "%s.%s" % (s["Name"], self.region),
            "RaftProtocol": "3",
            "Voter": s["Voter"],
        } for s in self.raft_members()]}
        return deep_merge(view, self.server_overrides["raft"])

    def members_view(self):
        if self.servers is None:
            return self.members
        local = self.answering_server()
        voters = len([s for s in self.raft_members() if s["Voter"]])
        view = {
            "ServerName": local["Name"] if local else "",
            "ServerRegion": self.region,
            "ServerDC": local["Datacenter"] if local else "",
            "Members": [serf_member(s, self.region, voters)
                        for s in sorted(self.servers, key=lambda s: s["Name"])],
        }
        return deep_merge(view, self.server_overrides["members"])

    def autopilot_view(self):
        """Return autopilot health computed the way raft-autopilot does.

        A server is healthy when it is alive and its scenario Healthy flag is
        set. The cluster is healthy when every server in the Raft configuration
        is; FailureTolerance is healthy voters minus the quorum size, at least 0.
        """
        if self.servers is None:
            return self.autopilot
        leader = self.leader_server()
        now = time.time()
        servers = []
        for server in self.raft_members():
            healthy = server_ok(server)
            if server is leader:
                last_contact = "0s"
            elif healthy:
                last_contact = format_go_duration(stable_number(server["Name"], 5, 40) / 1000.0)
            else:
                last_contact = format_go_duration(max(round(now - server["changed_at"], 3), 1.0))
            servers.append({
                "ID": server["ID"],
                "Name": server["Name"],
                "Address": rpc_address(server),
                "SerfStatus": server["Status"],
                "Version": server["Version"],
                "Leader": server is leader,
                "LastContact": last_contact,
                "LastTerm": self.raft_term if healthy else server["last_term"] or self.raft_term,
                "LastIndex": self.index if healthy else server["last_index"] or self.index,
                "Healthy": healthy,
                "Voter": server["Voter"],
                "StableSince": rfc3339(int(server["changed_at"] * 1e9)),
            })
        voters = [s for s in servers if s["Voter"]]
        healthy_voters = len([s for s in voters if s["Healthy"]])
        ordered_voters = sorted(voters, key=lambda s: (not s["Leader"], not s["Healthy"],
                                                       s["StableSince"], s["Name"]))
        healthy = all(s["Healthy"] for s in servers)
        if self.autopilot_healthy_pin is not None:
            healthy = self.autopilot_healthy_pin
        view = {
            "Healthy": healthy,
            "FailureTolerance": max(0, healthy_voters - (len(voters) // 2 + 1)),
            "Servers": servers,
            "Leader": leader["ID"] if leader else "",
            "Voters": [s["ID"] for s in ordered_voters],
        }
        return deep_merge(view, self.server_overrides["autopilot"])

    def agent_self_view(self):
        if self.servers is None:
            return self.agent_self
        local = self.answering_server()
        members = self.members_view()
        view = default_agent_self(self.region, self.leader, self.acl_token is not None, members)
        if local is None:
            return deep_merge(view, self.server_overrides["agent_self"])
        config = view["config"]
        config["NodeName"] = local["Name"]
        config["Datacenter"] = local["Datacenter"]
        config["AdvertiseAddrs"] = {"HTTP": "%s:4646" % local["Addr"],
                                    "RPC": rpc_address(local),
                                    "Serf": "%s:%d" % (local["Addr"], local["SerfPort"])}
        config["Server"]["BootstrapExpect"] = len([s for s in self.servers if s["Voter"]])
        view["member"] = next((m for m in members["Members"]
                               if m["Name"] == "%s.%s" % (local["Name"], self.region)), {})
        is_leader = local is self.leader_server()
        stats = view["stats"]
        stats["nomad"]["leader"] = "true" if is_leader else "false"
        stats["raft"]["state"] = ("Leader" if is_leader
                                  else "Follower" if self.leader else "Candidate")
        stats["raft"]["last_contact"] = "never" if is_leader else "0"
        stats["raft"]["num_peers"] = str(max(len(self.raft_members()) - 1, 0))
        stats["raft"]["term"] = str(self.raft_term)
        stats["serf"]["members"] = str(len(self.servers))
        stats["serf"]["failed"] = str(len([s for s in self.servers if s["Status"] == "failed"]))
        stats["serf"]["left"] = str(len([s for s in self.servers if s["Status"] == "left"]))
        return deep_merge(view, self.server_overrides["agent_self"])

    def server_named(self, name):
        if self.servers is None:
            raise ScenarioError("the loaded scenario has no \"servers\"; load one with a servers "
                                "list to change servers by name")
        for server in self.servers:
            if server["Name"] == name:
                return server
        raise ScenarioError("server %r not found; known: %s"
                            % (name, ", ".join(s["Name"] for s in self.servers)))

    def change_server(self, server, status=None, healthy=None):
        """Set a server's Status and/or Healthy flag, then hold an election if auto_elect is on."""
        was_ok = server_ok(server)
        if status is not None:
            if status not in SERVER_STATUSES:
                raise ScenarioError("server status %r is invalid; use one of %s"
                                    % (status, ", ".join(SERVER_STATUSES)))
            server["Status"] = status
        if healthy is not None:
            server["Healthy"] = bool(healthy)
        if was_ok != server_ok(server):
            server["changed_at"] = time.time()
            if not server_ok(server):
                server["last_index"] = self.index
                server["last_term"] = self.raft_term
        if self.auto_elect:
            self.hold_election()
        self.update_leader()

    def hold_election(self):
        """Give a cluster with a quorum of alive voters and no leader one, and take the leader
        from a cluster without such a quorum, as Raft would within seconds."""
        alive_voters = [s for s in self.raft_members() if s["Voter"] and s["Status"] == "alive"]
        if len(alive_voters) < self.quorum_size():
            for server in self.servers:
                server["Leader"] = False
            return
        if self.leader_server() is not None:
            return
        winner = sorted(alive_voters, key=lambda s: (not s["Healthy"], s["Name"]))[0]
        for server in self.servers:
            server["Leader"] = server is winner

    def update_leader(self):
        """Recompute the leader address from the servers; a change releases blocked queries."""
        if self.servers is None:
            return
        leader = self.leader_address(self.servers)
        if leader == self.leader:
            return
        self.leader = leader
        self.generation += 1
        if leader:
            self.raft_term += 1
            self.restart_lock_timers()
        self.cond.notify_all()

    # -- variables and locks (the caller must own self.cond) -------------------

    def store_variable(self, namespace, path, items, lock):
        """Write a variable as one Raft entry and return it.

        An update keeps the variable's CreateIndex and CreateTime.
        """
        key = (namespace, path)
        existing = self.variables.get(key)
        stamp = now_ns()
        index = self.bump("vars")
        self.variables[key] = {
            "Namespace": namespace,
            "Path": path,
            "Lock": lock,
            "CreateIndex": existing["CreateIndex"] if existing else index,
            "CreateTime": existing["CreateTime"] if existing else stamp,
            "ModifyIndex": index,
            "ModifyTime": stamp,
            "Items": dict(items or {}),
        }
        return self.variables[key]

    def remove_variable(self, namespace, path):
        """Delete a variable and its lock timer as one Raft entry; returns the new index."""
        del self.variables[(namespace, path)]
        self.locks.pop((namespace, path), None)
        return self.bump("vars")

    def release_variable_lock(self, key):
        """Clear a variable's lock as one Raft entry; ModifyTime stays, as in Nomad."""
        var = self.variables[key]
        var["Lock"] = None
        var["ModifyIndex"] = self.bump("vars")
        self.locks.pop(key, None)
        return var

    def start_lock_timer(self, key, lock):
        """Arm the TTL timer of a lock (TTL and LockDelay in seconds)."""
        self.locks[key] = {
            "id": lock["ID"],
            "ttl_s": lock["TTL"],
            "delay_s": lock["LockDelay"],
            "expires_at": time.monotonic() + lock["TTL"] * self.lock_ttl_factor,
            "release_at": None,
        }

    def renew_lock_timer(self, key):
        """Re-arm a live lock timer; returns False when the lock has expired (its delay runs)."""
        timer = self.locks.get(key)
        if timer is None or timer["release_at"] is not None:
            return False
        timer["expires_at"] = time.monotonic() + timer["ttl_s"] * self.lock_ttl_factor
        return True

    def restart_lock_timers(self):
        """Give every held lock a fresh TTL timer, as a newly elected Nomad leader does."""
        now = time.monotonic()
        for key, var in self.variables.items():
            if var.get("Lock") and key in self.locks:
                timer = self.locks[key]
                timer["expires_at"] = now + timer["ttl_s"] * self.lock_ttl_factor
                timer["release_at"] = None

    def expire_locks(self, now):
        """Expire locks not renewed in time and release them once their LockDelay has passed.

        Only a leader runs lock timers, so nothing expires while there is none.
        """
        if not self.leader:
            return
        for key, timer in list(self.locks.items()):
            if timer["release_at"] is None and now >= timer["expires_at"]:
                timer["release_at"] = timer["expires_at"] + timer["delay_s"]
            if timer["release_at"] is None or now < timer["release_at"]:
                continue
            var = self.variables.get(key)
            # NOTE: Nomad clears whatever lock the variable holds by then; this
            # server only clears the expired lock, never a newer one.
            if var is not None and var.get("Lock") and var["Lock"]["ID"] == timer["id"]:
                self.release_variable_lock(key)
            else:
                del self.locks[key]

    # -- timeline, ticks and restarts ------------------------------------------

    def schedule(self, item, due_time=None, due_tick=None):
        """Queue item to run once time.monotonic() reaches due_time or the tick reaches due_tick."""
        self.pending_order += 1
        item.update(due_time=due_time, due_tick=due_tick, order=self.pending_order)
        self.pending.append(item)

    def is_due(self, item, now):
        return ((item["due_time"] is not None and now >= item["due_time"])
                or (item["due_tick"] is not None and self.tick >= item["due_tick"]))

    def run_due(self):
        """Apply every timeline entry, restart recovery and lock expiry that is due."""
        with self.cond:
            now = time.monotonic()
            self.expire_locks(now)
            due = [item for item in self.pending if self.is_due(item, now)]
            if not due:
                return
            infinity = float("inf")
            due.sort(key=lambda item: (
                infinity if item["due_time"] is None else item["due_time"],
                infinity if item["due_tick"] is None else item["due_tick"],
                item["order"]))
            for item in due:
                self.pending.remove(item)
                try:
                    self.run_item(item)
                except Exception:  # a bug in this server: log it and keep the scheduler alive
                    sys.stderr.write("fake_nomad: internal error in scheduled %s\n%s"
                                     % (item["kind"], traceback.format_exc()))

    def run_item(self, item):
        kind = item["kind"]
        if kind == "timeline":
            entry = item["entry"]
            record = {"position": entry["position"], "op": entry["op"],
                      "time": time.time(), "tick": self.tick}
            try:
                record["index"] = self.apply_mutations([entry["op"]])
            except ScenarioError as err:
                record["error"] = str(err)
                self.timeline_errors.append(record)
                sys.stderr.write("fake_nomad: timeline[%d] failed: %s\n" % (entry["position"], err))
                return
            self.timeline_applied.append(record)
        elif kind == "recover_node":
            self.recover_node(item["target"], item["entry"])
        elif kind == "recover_server":
            self.recover_server(item["target"], item["entry"])

    def next_deadline(self):
        """Return the earliest time.monotonic() at which run_due() has work, or None."""
        deadlines = [item["due_time"] for item in self.pending if item["due_time"] is not None]
        if self.leader:
            for timer in self.locks.values():
                deadlines.append(timer["expires_at"] if timer["release_at"] is None
                                 else timer["release_at"])
        return min(deadlines, default=None)

    def run_scheduler(self):
        """Run due work until stopping; wakes at the next deadline or on any write."""
        with self.cond:
            while not self.stopping:
                self.run_due()
                deadline = self.next_deadline()
                timeout = SCHEDULER_IDLE_S
                if deadline is not None:
                    timeout = min(max(deadline - time.monotonic(), 0.001), SCHEDULER_IDLE_S)
                self.cond.wait(timeout)

    def advance_tick(self, count):
        """Advance the logical clock by count ticks, running what each tick makes due."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10000:
            raise ScenarioError("tick count must be an integer from 1 to 10000, got %r" % (count,))
        with self.cond:
            for _ in range(count):
                self.tick += 1
                self.run_due()
            return {"tick": self.tick, "index": self.index}

    def record_restart(self, request):
        """Record that a host's agent was restarted and schedule its recovery.

        request is {"node": ID} and/or {"server": Name}, plus an optional
        "argv". A server with node_id shares its host with that client node,
        so restarting either brings back both. Returns the restart entry.
        """
        if not isinstance(request, dict):
            raise ScenarioError("restarted body must be an object such as {\"node\": \"<ID>\"}")
        node_id = request.get("node")
        server_name = request.get("server")
        if node_id is None and server_name is None:
            raise ScenarioError("restarted body needs \"node\" (a node ID) or \"server\" "
                                "(a server Name)")
        for field, value in (("node", node_id), ("server", server_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ScenarioError("restarted %s must be a non-empty string, got %r"
                                    % (field, value))
        with self.cond:
            server = self.server_named(server_name) if server_name is not None else None
            if node_id is not None and node_id not in self.nodes:
                raise ScenarioError("node %r not found" % node_id)
            if node_id is None and server is not None and server["node_id"] in self.nodes:
                node_id = server["node_id"]
            if server is None and node_id is not None:
                server = next((s for s in self.servers or [] if s["node_id"] == node_id), None)

            entry = {
                "seq": len(self.restarts) + 1,
                "time": time.time(),
                "tick": self.tick,
                "node": node_id,
                "server": server["Name"] if server else None,
                "argv": request.get("argv"),
                "node_state": None, "node_ready_time": None, "node_ready_tick": None,
                "server_state": None, "server_alive_time": None, "server_alive_tick": None,
            }
            self.restarts.append(entry)
            if node_id is not None:
                self.schedule_recovery("node", node_id,
                                       self.node_restart.get(node_id) or DEFAULT_RESTART, entry)
            if server is not None:
                self.schedule_recovery("server", server["Name"],
                                       server["restart"] or DEFAULT_RESTART, entry)
            self.run_due()
            return copy.deepcopy(entry)

    def schedule_recovery(self, kind, target, behaviour, entry):
        state_key = "%s_state" % kind
        if behaviour.get("never"):
            entry[state_key] = "never"
            return
        # A newer restart of the same agent replaces a recovery still pending.
        for item in list(self.pending):
            if item["kind"] == "recover_" + kind and item["target"] == target:
                item["entry"][state_key] = "superseded"
                self.pending.remove(item)
        entry[state_key] = "pending"
        due_time = due_tick = None
        if "ready_after_s" in behaviour:
            due_time = time.monotonic() + behaviour["ready_after_s"]
        if "ready_after_ticks" in behaviour:
            due_tick = self.tick + behaviour["ready_after_ticks"]
        self.schedule({"kind": "recover_" + kind, "target": target, "entry": entry},
                      due_time=due_time, due_tick=due_tick)

    def recover_node(self, node_id, entry):
        node = self.nodes.get(node_id)
        if node is None:
            entry["node_state"] = "missing"
            return
        if node["Status"] != "ready":
            self.apply_mutations([{"op": "set_node_status", "id": node_id, "status": "ready"}])
            # A node loaded as down was made ineligible only because it was down.
            if node_id not in self.explicit_eligibility:
                node["SchedulingEligibility"] = "eligible"
        entry.update(node_state="ready", node_ready_time=time.time(), node_ready_tick=self.tick)

    def recover_server(self, name, entry):
        server = next((s for s in self.servers or [] if s["Name"] == name), None)
        if server is None:
            entry["server_state"] = "missing"
            return
        self.change_server(server, status="alive", healthy=True)
        entry.update(server_state="alive", server_alive_time=time.time(),
                     server_alive_tick=self.tick)

    # -- writes (the caller must own self.cond) -------------------------------

    def bump(self, *tables):
        """Advance the Raft index for one write and mark tables as changed by it."""
        self.index += 1
        for table in tables:
            self.table_index[table] = self.index
        self.cond.notify_all()
        return self.index

    def delete_registration(self, namespace, reg_id):
        """Delete by (namespace, ID), as Nomad's state store does. Returns the new index."""
        if (namespace, reg_id) not in self.services:
            raise HttpError(500, "service registration not found")
        del self.services[(namespace, reg_id)]
        return self.bump("services")

    def force_gc(self):
        """Apply `nomad system gc`: drop terminal evals and allocs, their registrations,
        and down nodes with no live allocs left. Returns the new index."""
        dead_evals = [eid for eid, e in self.evals.items()
                      if e.get("Status") in TERMINAL_EVAL_STATUSES]
        dead_allocs = {aid for aid, a in self.allocs.items()
                       if a.get("ClientStatus") in TERMINAL_ALLOC_STATUSES}
        for eval_id in dead_evals:
            del self.evals[eval_id]
        for alloc_id in dead_allocs:
            del self.allocs[alloc_id]
        dead_regs = [key for key, reg in self.services.items() if reg.get("AllocID") in dead_allocs]
        for key in dead_regs:
            del self.services[key]
        busy_nodes = {a.get("NodeID") for a in self.allocs.values()}
        dead_nodes = [nid for nid, n in self.nodes.items()
                      if n.get("Status") == "down" and nid not in busy_nodes]
        for node_id in dead_nodes:
            del self.nodes[node_id]

        changed = []
        if dead_evals:
            changed.append("evals")
        if dead_allocs:
            changed.append("allocs")
        if dead_regs:
            changed.append("services")
        if dead_nodes:
            changed.append("nodes")
        return self.bump(*changed)

    # Everything an operation may change; apply_mutations restores these on failure.
    MUTABLE_FIELDS = ("nodes", "allocs", "evals", "services", "variables", "jobs", "locks",
                      "table_index", "index", "leader", "known_leader", "autopilot",
                      "autopilot_healthy_pin", "servers", "raft_term", "node_restart",
                      "explicit_eligibility")

    def apply_mutations(self, ops):
        """Apply a list of control-API operations atomically. Returns the new index.

        Each operation is one write (one index bump). On any invalid operation
        nothing is changed and ScenarioError names the operation.
        """
        if not isinstance(ops, list):
            raise ScenarioError("mutate body must be a JSON array of operations")
        with self.cond:
            saved = copy.deepcopy([getattr(self, name) for name in self.MUTABLE_FIELDS])
            try:
                for position, op in enumerate(ops):
                    if not isinstance(op, dict) or not isinstance(op.get("op"), str):
                        raise ScenarioError("mutate[%d] must be an object with an \"op\" string"
                                            % position)
                    try:
                        self.apply_one(op)
                    except KeyError as exc:
                        raise ScenarioError("mutate[%d] (%s): missing or unknown value %s"
                                            % (position, op["op"], exc)) from None
                    except ScenarioError as exc:
                        raise ScenarioError("mutate[%d] (%s): %s"
                                            % (position, op["op"], exc)) from None
            except ScenarioError:
                for name, value in zip(self.MUTABLE_FIELDS, saved):
                    setattr(self, name, value)
                raise
            self.cond.notify_all()
            return self.index

    def mark_leader(self, op):
        """Move the Leader flag to the server named by op["name"] or addressed by op["leader"].

        An empty name or address clears it. A server that is not alive keeps
        the flag without leading, so the cluster has no leader until it is.
        """
        if "name" in op:
            target = self.server_named(op["name"]) if op["name"] else None
        else:
            address = op["leader"]
            target = None
            if address:
                target = next((s for s in self.servers if rpc_address(s) == address), None)
                if target is None:
                    raise ScenarioError("no server has the RPC address %r; known: %s"
                                        % (address, ", ".join(rpc_address(s)
                                                              for s in self.servers)))
        for server in self.servers:
            server["Leader"] = server is target
        self.update_leader()

    def lookup(self, table, key, what):
        if key not in table:
            raise ScenarioError("%s %r not found" % (what, key))
        return table[key]

    def apply_one(self, op):
        kind = op["op"]
        stamp = now_ns()
        if kind == "set_alloc_status":
            alloc = self.lookup(self.allocs, op["id"], "allocation")
            status = op.get("client_status", alloc["ClientStatus"])
            alloc["ClientStatus"] = status
            if "desired_status" in op:
                alloc["DesiredStatus"] = op["desired_status"]
            for state in (alloc.get("TaskStates") or {}).values():
                fresh = task_state(status, alloc["CreateTime"], stamp)
                state.update(fresh)
            alloc["ModifyTime"] = stamp
            tables = ["allocs"]
            if op.get("deregister_services") and status in TERMINAL_ALLOC_STATUSES:
                for key in [k for k, r in self.services.items() if r["AllocID"] == op["id"]]:
                    del self.services[key]
                tables.append("services")
            index = self.bump(*tables)
            alloc["ModifyIndex"] = index
            alloc["AllocModifyIndex"] = index
        elif kind == "remove_alloc":
            self.lookup(self.allocs, op["id"], "allocation")
            del self.allocs[op["id"]]
            tables = ["allocs"]
            if op.get("deregister_services"):
                for key in [k for k, r in self.services.items() if r["AllocID"] == op["id"]]:
                    del self.services[key]
                tables.append("services")
            self.bump(*tables)
        elif kind == "add_alloc":
            raw = op["alloc"]
            if not isinstance(raw, dict) or not raw.get("ID"):
                raise ScenarioError("\"alloc\" must be an object with an ID")
            alloc = fill_alloc(raw, self.nodes, list(self.services.values()), self.region, stamp)
            index = self.bump("allocs")
            alloc["CreateIndex"] = alloc["ModifyIndex"] = alloc["AllocModifyIndex"] = index
            sync_job_indexes(alloc)
            self.allocs[alloc["ID"]] = alloc
        elif kind in ("add_service", "add_registration"):
            raw = op.get("service", op.get("registration"))
            if not isinstance(raw, dict) or not raw.get("ID") or not raw.get("ServiceName"):
                raise ScenarioError("\"service\" must be an object with ID and ServiceName")
            reg = fill_registration(raw, self.allocs, self.nodes)
            index = self.bump("services")
            reg["CreateIndex"] = reg["ModifyIndex"] = index
            self.services[(reg["Namespace"], reg["ID"])] = reg
        elif kind in ("remove_service", "remove_registration"):
            key = (op.get("namespace", "default"), op["id"])
            self.lookup(self.services, key, "service registration")
            del self.services[key]
            self.bump("services")
        elif kind == "set_node_status":
            node = self.lookup(self.nodes, op["id"], "node")
            node["Status"] = op["status"]
            node["StatusUpdatedAt"] = stamp // 1_000_000_000
            if op["status"] in ("down", "disconnected"):
                message = "Node heartbeat missed"
            else:
                message = "Node reregistered by heartbeat"
            node["Events"] = (node.get("Events") or [])[-9:] + [{
                "CreateIndex": self.index + 1, "Details": None, "Message": message,
                "Subsystem": "Cluster", "Timestamp": rfc3339(stamp)}]
            node["ModifyIndex"] = self.bump("nodes")
        elif kind == "add_node":
            raw = op["node"]
            if not isinstance(raw, dict) or not raw.get("ID"):
                raise ScenarioError("\"node\" must be an object with an ID")
            clean = {key: value for key, value in raw.items() if not key.startswith("_")}
            behaviour = parse_restart(raw.get("_restart"), "node._restart")
            node = fill_node(clean, len(self.nodes), stamp)
            index = self.bump("nodes")
            node["CreateIndex"] = node["ModifyIndex"] = index
            self.nodes[node["ID"]] = node
            if behaviour is not None:
                self.node_restart[node["ID"]] = behaviour
            if "SchedulingEligibility" in clean:
                self.explicit_eligibility.add(node["ID"])
        elif kind == "remove_node":
            self.lookup(self.nodes, op["id"], "node")
            del self.nodes[op["id"]]
            self.bump("nodes")
        elif kind == "add_eval":
            raw = op["eval"]
            if not isinstance(raw, dict) or not raw.get("ID"):
                raise ScenarioError("\"eval\" must be an object with an ID")
            evaluation = fill_eval(raw, stamp)
            index = self.bump("evals")
            evaluation["CreateIndex"] = evaluation["ModifyIndex"] = index
            self.evals[evaluation["ID"]] = evaluation
        elif kind == "remove_eval":
            self.lookup(self.evals, op["id"], "evaluation")
            del self.evals[op["id"]]
            self.bump("evals")
        elif kind == "add_job":
            raw = op["job"]
            if not isinstance(raw, dict) or not raw.get("ID"):
                raise ScenarioError("\"job\" must be an object with an ID")
            job = fill_job(raw, self.region, stamp, "job")
            key = (job["Namespace"], job["ID"])
            index = self.bump("jobs")
            previous = self.jobs.get(key)
            # Registering an existing job again updates it, as `nomad job run` does.
            job["CreateIndex"] = previous["CreateIndex"] if previous else index
            job["ModifyIndex"] = job["JobModifyIndex"] = index
            job["Version"] = previous["Version"] + 1 if previous else 0
            self.jobs[key] = job
        elif kind == "remove_job":
            key = (op.get("namespace", "default"), op["id"])
            self.lookup(self.jobs, key, "job")
            del self.jobs[key]
            self.bump("jobs")
        elif kind == "set_leader":
            if self.servers is None and "name" not in op:
                previous = self.leader
                self.leader = op["leader"]
                if self.leader and self.leader != previous:
                    self.restart_lock_timers()
            else:
                self.mark_leader(op)
            self.generation += 1
        elif kind == "set_known_leader":
            self.known_leader = bool(op["value"])
        elif kind == "set_autopilot_healthy":
            if self.servers is not None and op["value"] is None:
                self.autopilot_healthy_pin = None
            else:
                self.autopilot["Healthy"] = bool(op["value"])
                self.autopilot_healthy_pin = bool(op["value"])
        elif kind == "set_server_status":
            self.change_server(self.server_named(op["name"]), status=op["status"])
        elif kind == "set_server_healthy":
            self.change_server(self.server_named(op["name"]), healthy=bool(op["value"]))
        elif kind == "set_variable":
            namespace = op.get("namespace") or "default"
            path = op["path"]
            items = op["items"]
            if not isinstance(path, str) or variable_path_error(path):
                raise ScenarioError("path %r is invalid: %s"
                                    % (path, variable_path_error(str(path))))
            if (not isinstance(items, dict) or not items
                    or not all(isinstance(v, str) for v in items.values())):
                raise ScenarioError("\"items\" must be a non-empty object of string values")
            existing = self.variables.get((namespace, path))
            # A test write keeps a held lock, as a write by the lock holder does.
            self.store_variable(namespace, path, items, existing["Lock"] if existing else None)
        elif kind == "delete_variable":
            namespace = op.get("namespace") or "default"
            self.lookup(self.variables, (namespace, op["path"]), "variable")
            self.remove_variable(namespace, op["path"])
        else:
            raise ScenarioError("unknown op %r; tests/fake_nomad/README.md lists the operations"
                                % kind)


# ---------------------------------------------------------------------------
# Faults and request recording


FAULT_KEYS = {"method", "path", "path_prefix", "times", "status", "body", "delay_ms",
              "truncate", "drop", "known_leader", "headers"}


def validate_fault(rule, position):
    if not isinstance(rule, dict):
        raise ScenarioError("faults[%d] must be an object" % position)
    unknown = set(rule) - FAULT_KEYS
    if unknown:
        raise ScenarioError("faults[%d] has unknown keys %s; allowed: %s"
                            % (position, sorted(unknown), sorted(FAULT_KEYS)))
    if "path" in rule and "path_prefix" in rule:
        raise ScenarioError("faults[%d] sets both path and path_prefix; use one" % position)
    if rule.get("times") is not None and (not isinstance(rule["times"], int) or rule["times"] < 1):
        raise ScenarioError("faults[%d].times must be a positive integer" % position)
    if rule.get("status") is not None and not isinstance(rule["status"], int):
        raise ScenarioError("faults[%d].status must be an integer HTTP status" % position)
    if not isinstance(rule.get("headers", {}), dict):
        raise ScenarioError("faults[%d].headers must be an object" % position)


class FaultBook:
    """Fault rules in order; the first rule that matches a request applies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def replace(self, rules):
        if not isinstance(rules, list):
            raise ScenarioError("faults body must be a JSON array of rules")
        for position, rule in enumerate(rules):
            validate_fault(rule, position)
        with self.lock:
            self.rules = [dict(rule) for rule in rules]

    def clear(self):
        with self.lock:
            self.rules = []

    def snapshot(self):
        with self.lock:
            return [dict(rule) for rule in self.rules]

    def take(self, method, path):
        """Return the first matching rule and count one use of it, or None."""
        with self.lock:
            for rule in self.rules:
                if rule.get("method") and rule["method"].upper() != method:
                    continue
                if "path" in rule and rule["path"] != path:
                    continue
                if "path_prefix" in rule and not path.startswith(rule["path_prefix"]):
                    continue
                taken = dict(rule)
                if rule.get("times") is not None:
                    rule["times"] -= 1
                    if rule["times"] <= 0:
                        self.rules.remove(rule)
                return taken
        return None


class RequestLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []

    def add(self, entry):
        with self.lock:
            self.entries.append(entry)

    def snapshot(self):
        with self.lock:
            return list(self.entries)

    def clear(self):
        with self.lock:
            self.entries = []


# ---------------------------------------------------------------------------
# Requests and replies


class Reply:
    """One HTTP response before faults and compression are applied."""

    def __init__(self, status=200, body=b"", content_type=JSON_TYPE):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = []         # extra (name, value) pairs
        self.index = None         # X-Nomad-Index when set
        self.query_meta = False   # add X-Nomad-Knownleader and X-Nomad-Lastcontact
        self.next_token = None

    @classmethod
    def json(cls, obj, status=200):
        return cls(status, json.dumps(obj).encode("utf-8"), JSON_TYPE)

    @classmethod
    def text(cls, status, text):
        return cls(status, text.encode("utf-8"), TEXT_TYPE)


class Call:
    """The parsed parts of one /v1 request that handlers need."""

    def __init__(self, method, path, params, headers, body):
        self.method = method
        self.path = path
        self.params = params            # name -> list of values
        self.headers = headers          # lower-case name -> value
        self.body = body

    def param(self, name, default=None):
        values = self.params.get(name)
        return values[0] if values else default

    def has(self, name):
        return name in self.params

    def flag(self, name, default=False):
        """A boolean query parameter; a bare `?name` counts as true."""
        if name not in self.params:
            return default
        value = self.param(name, "")
        if value == "":
            return True
        try:
            return parse_go_bool(value)
        except ValueError:
            return default

    def namespace(self):
        return self.param("namespace") or "default"

    def stale(self):
        if "stale" not in self.params:
            return False
        value = self.param("stale", "")
        if value == "":
            return True
        try:
            return parse_go_bool(value)
        except ValueError:
            raise HttpError(400, "Expect `true` or `false` for `stale` query string parameter, "
                                 "got %s" % value) from None

    def blocking(self):
        """Return (min_index, wait_s) from ?index= and ?wait=; raise 400 like Nomad."""
        wait_s = MAX_BLOCKING_WAIT_S
        wait = self.param("wait")
        if wait:
            try:
                wait_s = parse_go_duration(wait)
            except ValueError:
                raise HttpError(400, "Invalid wait time") from None
            wait_s = min(max(wait_s, 0.0), MAX_BLOCKING_WAIT_S)
            if wait_s == 0.0:
                wait_s = MAX_BLOCKING_WAIT_S
        min_index = 0
        index = self.param("index")
        if index:
            # strconv.ParseUint: ASCII digits only, at most 2^64-1.
            if not re.fullmatch(r"[0-9]+", index) or int(index) >= 2**64:
                raise HttpError(400, "Invalid index")
            min_index = int(index)
        return min_index, wait_s

    def per_page(self):
        try:
            return max(int(self.param("per_page", "0")), 0)
        except ValueError:
            # Nomad ignores a per_page it cannot parse.
            return 0


# ---------------------------------------------------------------------------
# Pagination


def compare_create_index_token(item, target):
    """Order an item against a `<CreateIndex>.<ID>` token the way Nomad's paginator does."""
    token = "%d.%s" % (item["CreateIndex"], item["ID"])
    parts = target.split(".", 1)
    if len(parts) == 2 and parts[0].isdigit():
        target_index = int(parts[0])
        if item["CreateIndex"] != target_index:
            return -1 if item["CreateIndex"] < target_index else 1
        return (item["ID"] > parts[1]) - (item["ID"] < parts[1])
    return (token > target) - (token < target)


def paginate(items, token_of, compare, per_page, next_token, reverse):
    """Return (page, next_token or None) for items already sorted ascending.

    The next token is the token of the first item of the next page, and a page
    starts at the first item that is not before next_token.
    """
    ordered = list(reversed(items)) if reverse else list(items)
    if next_token:
        sign = -1 if reverse else 1
        ordered = [item for item in ordered if sign * compare(item, next_token) >= 0]
    if per_page and len(ordered) > per_page:
        return ordered[:per_page], token_of(ordered[per_page])
    return ordered, None


def compare_plain_token(token_of):
    def compare(item, target):
        token = token_of(item)
        return (token > target) - (token < target)
    return compare


# ---------------------------------------------------------------------------
# The Nomad API


class NomadApi:
    """Routes /v1 requests to handlers. Handlers run with state.cond held."""

    def __init__(self, state):
        self.state = state
        self.views = {}     # name -> ((generation, index), value), see view()

    def view(self, name, build):
        """Return build()'s result, rebuilt only after a write (index) or a load (generation)."""
        version = (self.state.generation, self.state.index)
        entry = self.views.get(name)
        if entry is None or entry[0] != version:
            entry = (version, build())
            self.views[name] = entry
        return entry[1]

    def seek_by_create_index(self, call, table, namespace):
        """Return (page, next_token) of a table ordered by (CreateIndex, ID), found by bisection.

        Gives the same pages as ordered_by_create_index() for requests without
        prefix= and reverse=, without sorting the table for each page. Returns
        None for a next_token that is not `<CreateIndex>.<ID>`.
        """
        def build():
            objects = sorted((o for o in getattr(self.state, table).values()
                              if namespace == "*" or o.get("Namespace", "default") == namespace),
                             key=lambda o: (o["CreateIndex"], o["ID"]))
            return objects, [(o["CreateIndex"], o["ID"]) for o in objects]

        objects, keys = self.view((table, namespace), build)
        start = 0
        token = call.param("next_token")
        if token:
            parts = token.split(".", 1)
            if len(parts) != 2 or not parts[0].isdigit():
                return None
            start = bisect.bisect_left(keys, (int(parts[0]), parts[1]))
        per_page = call.per_page()
        end = start + per_page if per_page else len(objects)
        if end < len(objects):
            return objects[start:end], "%d.%s" % keys[end]
        return objects[start:], None

    # -- shared checks ------------------------------------------------------

    def check_region(self, call):
        region = call.param("region")
        if region and region != self.state.region:
            raise HttpError(500, "No path to region")

    def check_acl(self, call):
        expected = self.state.acl_token
        if expected is None:
            return
        token = call.headers.get("x-nomad-token", "")
        if not token:
            auth = call.headers.get("authorization", "")
            parts = auth.split()
            if len(parts) >= 2 and parts[0].lower() == "bearer":
                token = parts[1]
        if not token:
            raise HttpError(403, ERR_PERMISSION_DENIED)
        if token != expected:
            raise HttpError(403, ERR_TOKEN_NOT_FOUND)

    def require_leader(self, call, allow_stale):
        if allow_stale and call.stale():
            return
        if not self.state.leader:
            delay = self.state.no_leader_delay_s
            if delay > 0:
                self.state.cond.wait(delay)
            raise HttpError(500, ERR_NO_LEADER)

    def method(self, call, *allowed, code=405):
        if call.method not in allowed:
            raise HttpError(code, ERR_INVALID_METHOD)

    def read(self, call, compute, blocking=True, query_meta=True):
        """Run a read the way Nomad's RPC layer does: region, leader, ACL, then
        the query, blocking while its index is not above ?index=.

        query_meta adds X-Nomad-Index/Knownleader/Lastcontact; Nomad sends them
        only from handlers that return QueryMeta (lists, single objects, the
        scheduler configuration), not from agent, status or raft endpoints.
        """
        min_index, wait_s = call.blocking()
        stale = call.stale()
        self.check_region(call)
        self.require_leader(call, allow_stale=True)
        self.check_acl(call)
        reply = compute()
        if blocking and min_index > 0:
            state = self.state
            generation = state.generation
            deadline = time.monotonic() + wait_s + random.uniform(0, wait_s / BLOCKING_JITTER_FRACTION)
            while (reply.index or 0) <= min_index and not state.stopping \
                    and state.generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                state.cond.wait(remaining)
                if not stale and not state.leader:
                    raise HttpError(500, ERR_NO_LEADER)
                reply = compute()
        reply.query_meta = query_meta
        return reply

    def write(self, call, apply):
        self.check_region(call)
        self.require_leader(call, allow_stale=False)
        self.check_acl(call)
        index = apply()
        reply = Reply(200, b"", TEXT_TYPE)
        reply.index = index
        return reply

    # -- routing ------------------------------------------------------------

    def handle(self, call):
        # The variable path keeps its slashes exactly, so it is cut from the raw path.
        if call.path.startswith("/v1/var/") or call.path == "/v1/var":
            return self.variable(call, call.path[len("/v1/var/"):])
        parts = [p for p in call.path.split("/") if p != ""]
        if len(parts) < 2 or parts[0] != "v1":
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        route = parts[1]
        rest = parts[2:]
        handler = {
            "status": self.status,
            "agent": self.agent,
            "nodes": self.nodes_list,
            "node": self.node,
            "allocations": self.allocs_list,
            "allocation": self.allocation,
            "evaluations": self.evals_list,
            "services": self.services_list,
            "service": self.service,
            "system": self.system,
            "operator": self.operator,
            "namespaces": self.namespaces_list,
            "jobs": self.jobs_list,
            "job": self.job,
            "vars": self.vars_list,
        }.get(route)
        if handler is None:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        return handler(call, rest)

    # -- status and agent ---------------------------------------------------

    def status(self, call, rest):
        if rest == ["leader"]:
            self.method(call, "GET")
            self.check_region(call)
            self.require_leader(call, allow_stale=True)
            return Reply.json(self.state.leader)
        if rest == ["peers"]:
            self.method(call, "GET")
            self.check_region(call)
            if self.state.servers is not None:
                # Nomad forwards Status.Peers to the leader unless the read is stale.
                self.require_leader(call, allow_stale=True)
            return Reply.json([s.get("Address", "")
                               for s in self.state.raft_view().get("Servers", [])])
        raise HttpError(404, ERR_NOT_FOUND_PAGE)

    def agent(self, call, rest):
        if rest == ["health"]:
            self.method(call, "GET")
            return self.agent_health(call)
        if rest == ["self"]:
            self.method(call, "GET")
            self.check_acl(call)
            return Reply.json(self.state.agent_self_view())
        if rest == ["members"]:
            self.method(call, "GET")
            self.check_acl(call)
            return Reply.json(self.state.members_view())
        raise HttpError(404, ERR_NOT_FOUND_PAGE)

    def agent_health(self, call):
        kinds = call.params.get("type") or []
        server_ok = bool(self.state.leader)
        health = {}
        if not kinds or "client" in kinds:
            # This test server plays a server-only agent that also reports a client
            # section, as a dev agent does.
            health["client"] = {"ok": True, "message": "ok"}
        if not kinds or "server" in kinds:
            health["server"] = {"ok": server_ok,
                                "message": "ok" if server_ok else ERR_NO_LEADER}
        if all(section["ok"] for section in health.values()):
            return Reply.json(health)
        # Unhealthy: status 500 with the same JSON, sent as plain text.
        return Reply(500, json.dumps(health).encode("utf-8"), TEXT_TYPE)

    # -- nodes ----------------------------------------------------------------

    def nodes_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        prefix = call.param("prefix", "")
        with_os = call.flag("os")
        with_resources = call.flag("resources")

        def compute():
            nodes = sorted((n for n in self.state.nodes.values() if n["ID"].startswith(prefix)),
                           key=lambda n: n["ID"])
            token_of = lambda n: n["ID"]  # noqa: E731
            page, token = paginate(nodes, token_of, compare_plain_token(token_of),
                                   call.per_page(), call.param("next_token"), call.flag("reverse"))
            reply = Reply.json([node_stub(n, with_os, with_resources) for n in page])
            reply.index = self.state.table_index["nodes"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    def node_eligibility(self, call, node_id):
        """POST|PUT /v1/node/<id>/eligibility with {"Eligibility": "eligible"|"ineligible"}."""
        self.check_region(call)
        self.require_leader(call, allow_stale=False)
        self.check_acl(call)
        if not call.body:
            raise HttpError(400, "Request body is empty")
        try:
            request = json.loads(call.body)
        except ValueError:
            raise HttpError(400, "invalid JSON body") from None
        eligibility = request.get("Eligibility") if isinstance(request, dict) else None
        if eligibility not in ("eligible", "ineligible"):
            raise HttpError(400, "invalid scheduling eligibility %r" % (eligibility,))
        with self.state.cond:
            node = self.state.nodes.get(node_id)
            if node is None:
                raise HttpError(404, "node not found")
            node["SchedulingEligibility"] = eligibility
            self.state.explicit_eligibility.add(node_id)
            index = self.state.bump("nodes")
            node["ModifyIndex"] = index
        reply = Reply.json({"EvalCreateIndex": 0, "EvalIDs": [], "Index": index, "NodeModifyIndex": index})
        reply.index = index
        return reply

    def node(self, call, rest):
        if not rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        node_id = rest[0]
        if rest[1:] == ["allocations"]:
            self.method(call, "GET")
            return self.read(call, lambda: self.node_allocations(node_id))
        if rest[1:] == ["eligibility"]:
            self.method(call, "PUT", "POST")
            return self.node_eligibility(call, node_id)
        if len(rest) == 2 and rest[1] in ("drain", "purge", "evaluate", "gc"):
            self.method(call, "PUT", "POST")
            raise HttpError(404, "fake_nomad does not implement %s %s; add it to "
                                 "tests/fake_nomad/fake_nomad.py" % (call.method, call.path))
        self.method(call, "GET")
        node_id = "/".join(rest)

        def compute():
            node = self.state.nodes.get(node_id)
            if node is None:
                reply = Reply.text(404, "node not found")
                reply.index = self.state.table_index["nodes"]
                return reply
            reply = Reply.json(node)
            reply.index = node["ModifyIndex"]
            return reply

        return self.read(call, compute)

    def node_allocations(self, node_id):
        allocs = sorted((a for a in self.state.allocs.values() if a.get("NodeID") == node_id),
                        key=lambda a: (a["CreateIndex"], a["ID"]))
        reply = Reply.json(allocs)
        reply.index = max((a["ModifyIndex"] for a in allocs),
                          default=self.state.table_index["allocs"])
        return reply

    # -- allocations ----------------------------------------------------------

    def namespace_filter(self, call):
        namespace = call.namespace()
        if namespace == "*":
            return lambda obj: True
        return lambda obj: obj.get("Namespace", "default") == namespace

    def ordered_by_create_index(self, call, objects):
        """Sort and paginate allocs or evals: by CreateIndex, or by ID when ?prefix= is set."""
        prefix = call.param("prefix", "")
        if prefix:
            chosen = sorted((o for o in objects if o["ID"].startswith(prefix)),
                            key=lambda o: o["ID"])
            token_of = lambda o: o["ID"]  # noqa: E731
            compare = compare_plain_token(token_of)
        else:
            chosen = sorted(objects, key=lambda o: (o["CreateIndex"], o["ID"]))
            token_of = lambda o: "%d.%s" % (o["CreateIndex"], o["ID"])  # noqa: E731
            compare = compare_create_index_token
        return paginate(chosen, token_of, compare, call.per_page(), call.param("next_token"),
                        call.flag("reverse"))

    def allocs_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        in_namespace = self.namespace_filter(call)
        with_task_states = call.flag("task_states", default=True)
        with_resources = call.flag("resources")

        def compute():
            found = None
            if not call.param("prefix", "") and not call.flag("reverse"):
                found = self.seek_by_create_index(call, "allocs", call.namespace())
            if found is None:
                objects = [a for a in self.state.allocs.values() if in_namespace(a)]
                found = self.ordered_by_create_index(call, objects)
            page, token = found
            reply = Reply.json([alloc_stub(a, with_task_states, with_resources) for a in page])
            reply.index = self.state.table_index["allocs"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    def allocation(self, call, rest):
        if not rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        alloc_id = rest[0]
        if len(rest) > 2:
            raise HttpError(404, "Invalid URI")
        if len(rest) == 2:
            if rest[1] == "services":
                self.method(call, "GET")
                return self.read(call, lambda: self.alloc_services(alloc_id))
            if rest[1] == "stop":
                self.method(call, "PUT", "POST")
                raise HttpError(404, "fake_nomad does not implement %s %s; add it to "
                                     "tests/fake_nomad/fake_nomad.py" % (call.method, call.path))
            raise HttpError(404, "Invalid URI")
        self.method(call, "GET")

        def compute():
            # Nomad looks the alloc up by ID only; ?namespace= does not narrow it.
            alloc = self.state.allocs.get(alloc_id)
            if alloc is None:
                reply = Reply.text(404, "alloc not found")
                reply.index = self.state.table_index["allocs"]
                return reply
            reply = Reply.json(alloc)
            reply.index = alloc["ModifyIndex"]
            return reply

        return self.read(call, compute)

    def alloc_services(self, alloc_id):
        regs = sorted((r for r in self.state.services.values() if r.get("AllocID") == alloc_id),
                      key=lambda r: (r["Namespace"], r["ID"]))
        reply = Reply.json(regs)
        reply.index = self.state.table_index["services"]
        return reply

    # -- evaluations ----------------------------------------------------------

    def evals_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        if call.param("filter") and (call.param("status") or call.param("job")):
            raise HttpError(400, "Filter expression cannot be used with other filter parameters")
        in_namespace = self.namespace_filter(call)
        status = call.param("status")
        job = call.param("job")

        def compute():
            objects = [e for e in self.state.evals.values()
                       if in_namespace(e)
                       and (not status or e.get("Status") == status)
                       and (not job or e.get("JobID") == job)]
            page, token = self.ordered_by_create_index(call, objects)
            reply = Reply.json(page)
            reply.index = self.state.table_index["evals"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    # -- jobs -------------------------------------------------------------------

    def jobs_list(self, call, rest):
        """GET /v1/jobs: stubs ordered by (Namespace, ID), token `<namespace>.<ID>`."""
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        in_namespace = self.namespace_filter(call)
        prefix = call.param("prefix", "")

        def compute():
            jobs = [job for _, job in sorted(self.state.jobs.items())
                    if in_namespace(job) and job["ID"].startswith(prefix)]
            token_of = lambda j: "%s.%s" % (j["Namespace"], j["ID"])  # noqa: E731
            page, token = paginate(jobs, token_of, compare_plain_token(token_of),
                                   call.per_page(), call.param("next_token"), call.flag("reverse"))
            allocs = list(self.state.allocs.values())
            reply = Reply.json([job_stub(job, allocs) for job in page])
            reply.index = self.state.table_index["jobs"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    JOB_SUBRESOURCES = ("allocations", "evaluations", "evaluate", "deployments", "deployment",
                        "summary", "versions", "plan", "periodic", "dispatch", "revert",
                        "stable", "scale", "services", "submission", "action")

    def job(self, call, rest):
        """GET /v1/job/<ID>?namespace=: the full job; 404 "job not found"."""
        if not rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        if len(rest) >= 2 and rest[-1] in self.JOB_SUBRESOURCES:
            raise HttpError(404, "fake_nomad does not implement %s %s; add it to "
                                 "tests/fake_nomad/fake_nomad.py" % (call.method, call.path))
        self.method(call, "GET")
        job_id = "/".join(rest)
        namespace = call.namespace()

        def compute():
            job = self.state.jobs.get((namespace, job_id))
            if job is None:
                reply = Reply.text(404, "job not found")
                reply.index = self.state.table_index["jobs"]
                return reply
            reply = Reply.json(job)
            reply.index = job["ModifyIndex"]
            return reply

        return self.read(call, compute)

    # -- native services --------------------------------------------------------

    def services_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        in_namespace = self.namespace_filter(call)

        def compute():
            grouped = {}
            for reg in sorted(self.state.services.values(),
                              key=lambda r: (r["Namespace"], r["ServiceName"], r["ID"])):
                if not in_namespace(reg):
                    continue
                services = grouped.setdefault(reg["Namespace"], {})
                tags = services.setdefault(reg["ServiceName"], [])
                for tag in reg.get("Tags") or []:
                    if tag not in tags:
                        tags.append(tag)
            body = [{"Namespace": namespace,
                     "Services": [{"ServiceName": name, "Tags": tags}
                                  for name, tags in services.items()]}
                    for namespace, services in grouped.items()]
            reply = Reply.json(body)
            reply.index = self.state.table_index["services"]
            return reply

        return self.read(call, compute)

    def service(self, call, rest):
        if len(rest) == 1:
            self.method(call, "GET")
            return self.service_read(call, rest[0])
        if len(rest) == 2:
            self.method(call, "DELETE")
            namespace = call.namespace()
            reg_id = rest[1]
            # The name segment is not used: Nomad deletes by (namespace, ID).
            return self.write(call, lambda: self.state.delete_registration(namespace, reg_id))
        raise HttpError(404, ERR_NOT_FOUND_PAGE)

    def service_read(self, call, name):
        in_namespace = self.namespace_filter(call)

        def by_name():
            grouped = {}
            for reg in self.state.services.values():
                grouped.setdefault(reg["ServiceName"], []).append(reg)
            return grouped

        def compute():
            regs = sorted((r for r in self.view("services_by_name", by_name).get(name, ())
                           if in_namespace(r)),
                          key=lambda r: "%s.%s" % (r["Namespace"], r["ID"]))
            token_of = lambda r: "%s.%s" % (r["Namespace"], r["ID"])  # noqa: E731
            page, token = paginate(regs, token_of, compare_plain_token(token_of),
                                   call.per_page(), call.param("next_token"), call.flag("reverse"))
            reply = Reply.json(page)
            reply.index = self.state.table_index["services"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    # -- variables and locks ------------------------------------------------------
    # Status codes, bodies and headers follow Nomad's command/agent/variable_endpoint.go
    # and nomad/variables_endpoint.go. Every write that reaches Nomad's Raft
    # log bumps the index, CAS and lock conflicts included. Only writes that
    # change a variable move the variables table index and wake its readers.

    def vars_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")
        in_namespace = self.namespace_filter(call)
        prefix = call.param("prefix", "")

        def compute():
            token_of = lambda v: "%s.%s" % (v["Namespace"], v["Path"])  # noqa: E731
            chosen = sorted((v for v in self.state.variables.values()
                             if in_namespace(v) and v["Path"].startswith(prefix)), key=token_of)
            page, token = paginate(chosen, token_of, compare_plain_token(token_of),
                                   call.per_page(), call.param("next_token"), call.flag("reverse"))
            reply = Reply.json([variable_metadata(v) for v in page])
            reply.index = self.state.table_index["vars"]
            reply.next_token = token
            return reply

        return self.read(call, compute)

    def variable(self, call, path):
        if not path:
            raise HttpError(400, "missing variable path")
        if call.method == "GET":
            return self.variable_read(call, path)
        if call.method in ("PUT", "POST"):
            flags = [name for name in LOCK_OPERATIONS if call.has(name)]
            if len(flags) > 1:
                raise HttpError(400, "multiple lock operations")
            if flags and call.param("cas", ""):
                raise HttpError(400, "CAS can't be used with lock operations")
            if not flags:
                return self.variable_upsert(call, path)
            if flags[0] == "lock-acquire":
                return self.variable_lock_acquire(call, path)
            if flags[0] == "lock-renew":
                return self.variable_lock_renew(call, path)
            return self.variable_lock_release(call, path)
        if call.method == "DELETE":
            return self.variable_delete(call, path)
        # Nomad returns 400, not 405, for any other method on /v1/var/.
        raise HttpError(400, ERR_INVALID_METHOD)

    def variable_read(self, call, path):
        key = (call.namespace(), path)

        def compute():
            var = self.state.variables.get(key)
            if var is None:
                reply = Reply.text(404, "variable not found")
                reply.index = self.state.table_index["vars"]
                return reply
            reply = Reply.json(variable_json(var, var["Items"]))
            reply.index = var["ModifyIndex"]
            return reply

        return self.read(call, compute)

    @staticmethod
    def parse_cas(call):
        """Return the ?cas= index, or None when absent or empty (strconv.ParseUint rules)."""
        value = call.param("cas", "")
        if value == "":
            return None
        if not re.fullmatch(r"[0-9]+", value):
            raise HttpError(400, "can not parse cas: strconv.ParseUint: parsing %s: invalid syntax"
                            % json.dumps(value))
        if int(value) >= 2**64:
            raise HttpError(400, "can not parse cas: strconv.ParseUint: parsing %s: value out of "
                                 "range" % json.dumps(value))
        return int(value)

    def variable_write_checks(self, call):
        self.check_region(call)
        self.require_leader(call, allow_stale=False)
        self.check_acl(call)

    def variable_problem(self, namespace, path, items):
        """Return Nomad's validation complaint about a variable write, or None."""
        if namespace == "*":
            return "can not target wildcard (\"*\")namespace"
        if items_size(items) > MAX_VARIABLE_SIZE:
            return "variables are limited to 64KiB in total size"
        return variable_path_error(path)

    def variable_conflict(self, var, namespace, path, index):
        """Return a 409 whose body is var, or the zero variable when var is None.

        index is the X-Nomad-Index value, or None where Nomad sends none.
        """
        body = variable_json(var, var["Items"]) if var else zero_variable(namespace, path)
        reply = Reply.json(body, status=409)
        reply.index = index
        return reply

    def variable_upsert(self, call, path):
        request = decode_variable_request(call.body)
        if not request["Items"]:
            raise HttpError(400, "variable missing required Items object")
        cas = self.parse_cas(call)
        self.variable_write_checks(call)
        namespace = request["Namespace"] or call.namespace()
        lock = request["Lock"]
        if lock is not None and (lock["TTL"] or lock["LockDelay"]):
            raise HttpError(400, RPC_400_PREFIX + "variable should not contain lock definition")
        problem = self.variable_problem(namespace, path, request["Items"])
        if problem:
            raise HttpError(400, RPC_400_PREFIX + problem)
        canonical = None
        if lock is not None:
            # Nomad canonicalizes even a bare {"Lock": {}}: it gets a new ID and default
            # durations, and a write with the holder's ID keeps the lock.
            canonical = canonical_lock(lock)
            lock = lock_json(canonical)

        state = self.state
        existing = state.variables.get((namespace, path))
        if cas is not None:
            if cas == 0 and existing is not None:
                state.bump()
                return self.variable_conflict(existing, namespace, path, existing["ModifyIndex"])
            if cas != 0 and existing is None:
                state.bump()
                return self.variable_conflict(None, namespace, path, 0)
            if existing is not None and existing["ModifyIndex"] != cas:
                state.bump()
                return self.variable_conflict(existing, namespace, path, existing["ModifyIndex"])
        if existing is not None and existing.get("Lock") and (
                lock is None or lock["ID"] != existing["Lock"]["ID"]):
            state.bump()
            return self.variable_conflict(None, namespace, path, 0)

        var = state.store_variable(namespace, path, request["Items"], lock)
        timer = state.locks.get((namespace, path))
        if canonical is not None and timer is not None and timer["id"] == canonical["ID"]:
            # Nomad renews with the stored TTL, which this write reset to its default.
            timer["ttl_s"] = canonical["TTL"]
        reply = Reply.json(variable_json(var, request["Items"]))
        reply.index = var["ModifyIndex"]
        return reply

    def variable_delete(self, call, path):
        cas = self.parse_cas(call)
        self.variable_write_checks(call)
        namespace = call.namespace()
        state = self.state
        existing = state.variables.get((namespace, path))
        if cas is not None:
            if existing is None and cas != 0:
                state.bump()
                return self.variable_conflict(None, namespace, path, 0)
            if existing is not None and existing["ModifyIndex"] != cas:
                state.bump()
                return self.variable_conflict(existing, namespace, path, existing["ModifyIndex"])
        if existing is None:
            index = state.bump()
        elif existing.get("Lock"):
            # The HTTP delete carries no lock ID, so a locked variable cannot be deleted.
            state.bump()
            return self.variable_conflict(None, namespace, path, 0)
        else:
            index = state.remove_variable(namespace, path)
        reply = Reply(204, b"", TEXT_TYPE)
        reply.index = index
        return reply

    def variable_lock_acquire(self, call, path):
        request = decode_variable_request(call.body)
        self.variable_write_checks(call)
        namespace = request["Namespace"] or call.namespace()
        lock = canonical_lock(request["Lock"] or {"ID": "", "TTL": 0.0, "LockDelay": 0.0})
        if namespace == "*":
            raise HttpError(400, RPC_400_PREFIX + multierror_text(
                ["can not target wildcard (\"*\")namespace"]))
        problem = self.variable_problem(namespace, path, request["Items"])
        if problem:
            raise HttpError(400, RPC_400_PREFIX + problem)
        problems = lock_problems(lock, self.state.lock_min_ttl_s)
        if problems:
            raise HttpError(400, RPC_400_PREFIX + multierror_text(problems))

        state = self.state
        key = (namespace, path)
        existing = state.variables.get(key)
        if existing is not None and existing.get("Lock") and existing["Lock"]["ID"] != lock["ID"]:
            state.bump()
            # Nomad sets X-Nomad-Index only after writing the 409 status, so none is sent.
            return self.variable_conflict(None, namespace, path, None)
        var = state.store_variable(namespace, path, request["Items"], lock_json(lock))
        state.start_lock_timer(key, lock)
        reply = Reply.json(variable_json(var, request["Items"]))
        reply.index = var["ModifyIndex"]
        return reply

    def variable_lock_renew(self, call, path):
        request = decode_variable_request(call.body)
        self.variable_write_checks(call)
        # Renewal looks the variable up in the request's ?namespace= only; the body's
        # Namespace is not used.
        key = (call.namespace(), path)
        lock_id = request["Lock"]["ID"] if request["Lock"] else ""
        if not lock_id:
            raise HttpError(500, multierror_text(["missing lock ID"]))
        var = self.state.variables.get(key)
        if var is None:
            raise HttpError(404, "variable doesn't exist")
        if not var.get("Lock"):
            raise HttpError(409, "variable doesn't hold a lock")
        if var["Lock"]["ID"] != lock_id or not self.state.renew_lock_timer(key):
            raise HttpError(409, "attempting to modify locked variable")
        # Renewal writes nothing to Raft, and Nomad sends no X-Nomad-Index for it.
        return Reply.json(variable_metadata(var))

    def variable_lock_release(self, call, path):
        request = decode_variable_request(call.body)
        self.variable_write_checks(call)
        namespace = request["Namespace"] or call.namespace()
        lock = request["Lock"]
        if lock is None or not lock["ID"]:
            raise HttpError(400, RPC_400_PREFIX + "missing lock information")
        if request["Items"] is not None:
            raise HttpError(400, RPC_400_PREFIX + "lock release operation doesn't take variable "
                                                  "items")
        problem = variable_path_error(path)
        if problem:
            raise HttpError(400, problem)

        state = self.state
        key = (namespace, path)
        var = state.variables.get(key)
        if var is None:
            state.bump()
            raise HttpError(500, "variable doesn't exist")
        if not var.get("Lock"):
            state.bump()
            raise HttpError(500, "variable doesn't hold a lock")
        if var["Lock"]["ID"] != lock["ID"]:
            state.bump()
            return self.variable_conflict(None, namespace, path, None)
        var = state.release_variable_lock(key)
        reply = Reply.json(variable_metadata(var))
        reply.index = var["ModifyIndex"]
        return reply

    # -- system ------------------------------------------------------------------

    def system(self, call, rest):
        if rest == ["gc"]:
            self.method(call, "PUT")
            return self.write(call, self.state.force_gc)
        if rest == ["reconcile", "summaries"]:
            self.method(call, "PUT")
            return self.write(call, self.state.bump)
        raise HttpError(404, ERR_NOT_FOUND_PAGE)

    # -- operator ----------------------------------------------------------------

    def operator(self, call, rest):
        if rest == ["raft", "configuration"]:
            self.method(call, "GET")
            return self.read(call, lambda: Reply.json(self.state.raft_view()), blocking=False,
                             query_meta=False)
        if rest == ["autopilot", "health"]:
            # Nomad returns 404, not 405, for a non-GET here.
            self.method(call, "GET", code=404)
            if self.state.servers is not None:
                # Nomad always sends this to the leader, ignoring ?stale.
                call.stale()
                self.check_region(call)
                self.require_leader(call, allow_stale=False)
                self.check_acl(call)
                return self.autopilot_health()
            return self.read(call, self.autopilot_health, blocking=False, query_meta=False)
        if rest == ["scheduler", "configuration"]:
            self.method(call, "GET")
            return self.read(call, self.scheduler_config, blocking=False)
        raise HttpError(404, ERR_NOT_FOUND_PAGE)

    def autopilot_health(self):
        health = self.state.autopilot_view()
        return Reply.json(health, status=200 if health.get("Healthy") else 429)

    def scheduler_config(self):
        config = self.state.scheduler
        reply = Reply.json({
            "Index": config.get("ModifyIndex", 0),
            "KnownLeader": bool(self.state.leader) and self.state.known_leader,
            "LastContact": self.state.last_contact_ms,
            "NextToken": "",
            "SchedulerConfig": config,
        })
        reply.index = config.get("ModifyIndex", 0)
        return reply

    def namespaces_list(self, call, rest):
        if rest:
            raise HttpError(404, ERR_NOT_FOUND_PAGE)
        self.method(call, "GET")

        def compute():
            body = [{"Name": name, "Description": "", "Quota": "", "Capabilities": None,
                     "NodePoolConfiguration": None, "Meta": None,
                     "CreateIndex": 1, "ModifyIndex": 1}
                    for name in sorted(self.state.namespaces)]
            reply = Reply.json(body)
            reply.index = 1
            return reply

        return self.read(call, compute)


# ---------------------------------------------------------------------------
# HTTP plumbing


class FakeNomadServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The client opens up to 8 connections at once; the default backlog of 5
    # overflows and stalls a pass for a second.
    request_queue_size = 128

    def __init__(self, address, verbose=False):
        super().__init__(address, Handler)
        self.state = ClusterState()
        self.api = NomadApi(self.state)
        self.faults = FaultBook()
        self.requests = RequestLog()
        self.verbose = verbose
        # Applies timed timeline entries, restart recoveries and lock expiry even
        # when no request arrives; stop_blocking_queries() ends it.
        self.scheduler = threading.Thread(target=self.state.run_scheduler,
                                          name="fake-nomad-scheduler", daemon=True)
        self.scheduler.start()

    def stop_blocking_queries(self):
        with self.state.cond:
            self.state.stopping = True
            self.state.cond.notify_all()


class Handler(BaseHTTPRequestHandler):
    # Small responses on a kept-alive connection would otherwise wait for a delayed ACK.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "fake_nomad"

    def log_message(self, fmt, *args):
        # The request line carries no secrets (tokens travel in headers).
        if self.server.verbose:
            sys.stderr.write("fake_nomad: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- reading -------------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        params = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        headers = {name.lower(): value for name, value in self.headers.items()}
        # Due timeline entries, recoveries and lock expiry apply before the reply
        # is built, even if the scheduler thread has not woken up yet.
        self.server.state.run_due()
        if path.startswith("/_test/"):
            reply = self.control(path, body)
            self.send(reply, compress=False)
            return

        self.server.requests.add({
            "method": self.command,
            "path": path,
            "raw_path": split.path,
            "query": split.query,
            "params": {name: values[0] if len(values) == 1 else values
                       for name, values in params.items()},
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "time": time.time(),
        })
        fault = self.server.faults.take(self.command, path)
        if fault and fault.get("delay_ms"):
            time.sleep(fault["delay_ms"] / 1000.0)
        if fault and fault.get("drop"):
            self.drop_connection()
            return
        if fault and fault.get("status") is not None:
            reply = Reply.text(fault["status"], fault.get("body", ""))
        else:
            reply = self.call_api(Call(self.command, path, params, headers, body))
        if fault:
            if fault.get("known_leader") is False:
                reply.query_meta = True
                reply.headers.append((HEADER_KNOWN_LEADER, "false"))
            for name, value in (fault.get("headers") or {}).items():
                reply.headers.append((name, str(value)))
        compress = "gzip" in (headers.get("accept-encoding") or "").lower()
        self.send(reply, compress=compress, truncate=bool(fault and fault.get("truncate")))

    def call_api(self, call):
        state = self.server.state
        try:
            with state.cond:
                reply = self.server.api.handle(call)
                if reply.query_meta:
                    self.add_query_meta(reply, state)
                elif reply.index is not None:
                    reply.headers.append((HEADER_INDEX, str(reply.index)))
                return reply
        except HttpError as err:
            return Reply.text(err.status, err.text)
        except Exception:  # a bug in this server: return 500 and keep serving
            sys.stderr.write("fake_nomad: internal error on %s %s\n%s"
                             % (call.method, call.path, traceback.format_exc()))
            return Reply.text(500, "fake_nomad internal error; see its stderr")

    @staticmethod
    def add_query_meta(reply, state):
        known = bool(state.leader) and state.known_leader
        index = reply.index if reply.index is not None else state.index
        # Nomad never reports an index below 1, so clients always make progress.
        reply.headers.append((HEADER_INDEX, str(max(index, 1))))
        reply.headers.append((HEADER_KNOWN_LEADER, "true" if known else "false"))
        reply.headers.append((HEADER_LAST_CONTACT, str(state.last_contact_ms)))
        if reply.next_token:
            reply.headers.append((HEADER_NEXT_TOKEN, reply.next_token))

    # -- control API -----------------------------------------------------------

    def control(self, path, body):
        server = self.server
        method = self.command
        try:
            if path == "/_test/scenario" and method in ("PUT", "POST"):
                server.state.load(self.parse_json(body))
                return Reply.json({"index": server.state.index})
            if path == "/_test/state" and method == "GET":
                return Reply.json(server.state.to_json())
            if path == "/_test/requests" and method == "GET":
                return Reply.json(server.requests.snapshot())
            if path == "/_test/requests" and method == "DELETE":
                server.requests.clear()
                return Reply.json({})
            if path == "/_test/faults" and method in ("PUT", "POST"):
                server.faults.replace(self.parse_json(body))
                return Reply.json({})
            if path == "/_test/faults" and method == "GET":
                return Reply.json(server.faults.snapshot())
            if path == "/_test/faults" and method == "DELETE":
                server.faults.clear()
                return Reply.json({})
            if path == "/_test/mutate" and method in ("PUT", "POST"):
                index = server.state.apply_mutations(self.parse_json(body))
                return Reply.json({"index": index})
            if path == "/_test/tick" and method in ("PUT", "POST"):
                request = self.parse_json(body)
                if request is None:
                    request = {}
                if not isinstance(request, dict):
                    raise ScenarioError("tick body must be empty or an object such as "
                                        "{\"count\": 2}")
                return Reply.json(server.state.advance_tick(request.get("count", 1)))
            if path == "/_test/restarted" and method in ("PUT", "POST"):
                entry = server.state.record_restart(self.parse_json(body))
                return Reply.json({"restart": entry})
            if path == "/_test/restarts" and method == "GET":
                with server.state.cond:
                    return Reply.json(copy.deepcopy(server.state.restarts))
            if path == "/_test/restarts" and method == "DELETE":
                with server.state.cond:
                    server.state.restarts = []
                return Reply.json({})
        except ScenarioError as err:
            sys.stderr.write("fake_nomad: rejected %s %s: %s\n" % (method, path, err))
            return Reply.text(400, "%s\n" % err)
        return Reply.text(404, "unknown control request %s %s; see tests/fake_nomad/README.md\n"
                          % (method, path))

    @staticmethod
    def parse_json(body):
        try:
            return json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ScenarioError("request body is not valid JSON: %s" % err) from None

    # -- writing ---------------------------------------------------------------

    def send(self, reply, compress, truncate=False):
        body = reply.body
        # A 204 has no body, so it carries no Content-Type, Content-Length or encoding.
        no_content = reply.status == 204
        headers = [("Vary", "Accept-Encoding")]
        if not no_content:
            headers.insert(0, ("Content-Type", reply.content_type))
        if compress and not no_content:
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        headers.extend(reply.headers)
        try:
            self.send_response_only(reply.status)
            self.send_header("Date", self.date_time_string())
            for name, value in self.merge_headers(headers):
                self.send_header(name, value)
            if not no_content:
                self.send_header("Content-Length", str(len(body)))
            if truncate:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body[:len(body) // 2] if truncate else body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return
        self.log_request(reply.status, len(body))
        if truncate:
            self.drop_connection()

    @staticmethod
    def merge_headers(headers):
        """Keep the last value for each header name (fault headers override)."""
        merged = {}
        for name, value in headers:
            merged[name.lower()] = (name, value)
        return list(merged.values())

    def drop_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Command line


def load_scenario_argument(args):
    if args.scenario:
        with open(args.scenario, encoding="utf-8") as handle:
            return json.load(handle)
    if args.scenario_name:
        sys.path.insert(0, HERE)
        import scenarios  # noqa: E402  (sits next to this file)
        builder = scenarios.SCENARIOS.get(args.scenario_name)
        if builder is None:
            raise ScenarioError("unknown scenario name %r; known: %s"
                                % (args.scenario_name, ", ".join(sorted(scenarios.SCENARIOS))))
        return builder()
    return {}


def write_port_file(path, port):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write("%d\n" % port)
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Test Nomad HTTP API server (loopback only).")
    parser.add_argument("--port-file", required=True,
                        help="file that receives the listening port once the server is ready")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="listen address; only IPv4 loopback (127.0.0.0/8) is accepted")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scenario", help="scenario JSON file to load at start")
    group.add_argument("--scenario-name", help="built-in scenario from scenarios.py")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    try:
        bind = ipaddress.ip_address(args.bind)
    except ValueError:
        bind = None
    if bind is None or bind.version != 4 or not bind.is_loopback:
        sys.stderr.write("fake_nomad: invalid --bind %r: only an IPv4 loopback address "
                         "such as 127.0.0.1 is allowed\n" % args.bind)
        return 2

    try:
        scenario = load_scenario_argument(args)
    except (OSError, json.JSONDecodeError, ScenarioError) as err:
        sys.stderr.write("fake_nomad: cannot load scenario: %s\n" % err)
        return 2

    server = FakeNomadServer((str(bind), args.port), verbose=args.verbose)
    try:
        server.state.load(scenario)
    except ScenarioError as err:
        sys.stderr.write("fake_nomad: invalid scenario: %s\n" % err)
        server.server_close()
        return 2

    stop = threading.Event()

    def request_stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                               name="fake-nomad-serve", daemon=True)
    serving.start()
    port = server.server_address[1]
    write_port_file(args.port_file, port)
    sys.stderr.write("fake_nomad: listening on http://%s:%d (pid %d)\n" % (bind, port, os.getpid()))

    while not stop.wait(0.2):
        pass
    server.stop_blocking_queries()
    server.shutdown()
    server.server_close()
    try:
        os.unlink(args.port_file)
    except OSError:
        pass
    sys.stderr.write("fake_nomad: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
