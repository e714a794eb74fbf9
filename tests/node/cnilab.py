#!/usr/bin/env python3
"""Create, leak, inspect and remove the real CNI network state of Nomad allocations.

nomad-medic's node scope removes the network state that a Nomad client leaves
on its host when it restarts without tearing an allocation down. This module
makes that state for tests, with the real CNI plugins, as root:

- a network namespace bind-mounted at /var/run/netns/<alloc> (`ip netns add`,
  as Nomad's nsutil.NewNS does);
- Nomad's filter chain NOMAD-ADMIN with `-o <bridge> -d <subnet> -j ACCEPT`,
  created before the CNI ADD (Nomad's ensureForwardingRules);
- a CNI ADD of Nomad's bridge conflist (loopback, bridge + host-local,
  firewall, portmap), with the plugins run one by one the way libcni runs
  them, and the libcni cache file written afterwards;
- then the "crash": no DEL runs, and the chosen leak mode removes more.

Every name is configurable (network, bridge, subnet, IPAM and cache
directories), so labs with different names do not collide. Namespaces always
live in /var/run/netns because the CNI plugins and Nomad use that directory.

Library use:

    lab = Lab(network="nmtest3", bridge="nmtest3", subnet="172.26.83.0/24")
    try:
        leaked = lab.add(cnilab.new_alloc_id(), ports=[(28301, 8080)], leak_mode="netns")
        ...  # run the product with lab.product_paths()
        assert lab.artefacts(leaked["alloc_id"]) == []
    finally:
        lab.teardown()

Command line: `python3 cnilab.py --help`. A lab's state file (default
/run/nomad-medic-cnilab/<network>.json) lets a later `teardown` remove what an
interrupted run left behind.

Standard library only. Every subprocess runs from an argument list, never
through a shell. Not thread-safe: use one Lab per thread at most, and only
from the thread that created it.
"""

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

NETNS_DIR = "/var/run/netns"
IFNAME = "eth0"
ADMIN_CHAIN = "NOMAD-ADMIN"
CNI_VERSION = "0.4.0"
STATE_DIR = "/run/nomad-medic-cnilab"
LOCK_PATH = "/run/lock/nomad-medic-cnilab.lock"
SHARED_REGISTRY = os.path.join(STATE_DIR, "shared-created.json")
HOLDER_ENV = "NOMAD_MEDIC_CNILAB_HOLDER"
LEAK_MODES = ("record", "netns", "stale-file", "held")
REQUIRED_PLUGINS = ("loopback", "bridge", "host-local", "firewall", "portmap")

PLUGIN_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 30
LOCK_TIMEOUT_S = 120
SETTLE_TIMEOUT_S = 5.0

# Chains that every CNI bridge network on the host shares. CNI DEL never
# removes them. Teardown removes them only when they were absent at the lab's
# baseline and no other network uses them.
SHARED_NAT_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")
SHARED_FILTER_CHAINS = ("CNI-FORWARD", ADMIN_CHAIN)
SHARED_CHAINS = SHARED_NAT_CHAINS + SHARED_FILTER_CHAINS
# Tables that iptables-nft creates on first use (portmap's DEL also creates an
# empty "ip6 nat" on IPv4-only hosts).
NFT_TABLES = (("ip", "nat"), ("ip", "filter"), ("ip6", "nat"), ("ip6", "filter"))
FAMILIES = (("ipv4", "iptables", "iptables-save"), ("ipv6", "ip6tables", "ip6tables-save"))

# libcni's ValidateContainerID pattern, with a length limit because the ID also names a file in /var/run/netns.
ALLOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MASQ_CHAIN_RE = re.compile(r"^CNI-[0-9a-f]{24}$")
DNAT_CHAIN_RE = re.compile(r"^CNI-DN-[0-9a-f]{21}$")
# Comments of the bridge plugin (`name: "N" id: "A"`) and of portmap (`dnat name: ...`).
COMMENT_RE = re.compile(r'^(?P<dnat>dnat )?name: "(?P<network>[^"]*)" id: "(?P<alloc>[^"]*)"$')


class LabError(Exception):
    """A lab operation failed; the message names the value and what to do next."""


class PluginError(LabError):
    """CNI plugin failure, with the fields of the CNI error object the plugin printed."""

    def __init__(self, plugin, command, code, message, details):
        self.plugin = plugin
        self.command = command
        self.code = code
        self.cni_message = message
        self.details = details
        text = f"CNI plugin {plugin} failed on {command} (CNI error code {code}): {message}"
        if details:
            text += f" ({details})"
        super().__init__(text)


def new_alloc_id():
    """Return a random allocation ID in Nomad's format (a lowercase UUID)."""
    return str(uuid.uuid4())


def chain_hash(network, alloc_id):
    """Return hex(sha512(network + alloc_id)), the CNI plugins' chain-name hash."""
    return hashlib.sha512((network + alloc_id).encode()).hexdigest()


def masq_chain_name(network, alloc_id):
    """Return the bridge plugin's ipMasq chain: "CNI-" + 24 hex."""
    return "CNI-" + chain_hash(network, alloc_id)[:24]


def dnat_chain_name(network, alloc_id):
    """Return portmap's DNAT chain: "CNI-DN-" + 21 hex (iptables' 28-character limit)."""
    return "CNI-DN-" + chain_hash(network, alloc_id)[:21]


def nomad_conflist(network, bridge, subnet, data_dir=None, hairpin=False):
    """Return the conflist Nomad's NewNomadBridgeConflist builds, as bytes.

    Field order and layout follow Go's json.MarshalIndent(conflist, "", "\\t"),
    which leaves no trailing newline. data_dir=None omits host-local's dataDir,
    as Nomad 1.9.3 and older do.
    """
    ipam = {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}
    if data_dir is not None:
        ipam["dataDir"] = data_dir
    conflist = {
        "cniVersion": CNI_VERSION,
        "name": network,
        "plugins": [
            {"type": "loopback"},
            {
                "type": "bridge",
                "bridge": bridge,
                "ipMasq": True,
                "isGateway": True,
                "forceAddress": True,
                "hairpinMode": hairpin,
                "ipam": ipam,
            },
            {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": ADMIN_CHAIN},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    return json.dumps(conflist, indent="\t", ensure_ascii=False).encode()


def nomad_cni_args(alloc_id, job_id="cnilab", group_name="lab"):
    """Return the CNI_ARGS pairs Nomad passes, in the order the lab uses."""
    return [
        ["IgnoreUnknown", "true"],
        ["NOMAD_REGION", "global"],
        ["NOMAD_NAMESPACE", "default"],
        ["NOMAD_JOB_ID", job_id],
        ["NOMAD_GROUP_NAME", group_name],
        ["NOMAD_ALLOC_ID", alloc_id],
    ]


def port_mappings(ports, host_ip=""):
    """Return go-cni PortMapping objects: one tcp and one udp entry per (host, container) port.

    go-cni's struct has no json tags, so the keys are capitalised; portmap
    matches them case-insensitively.
    """
    mappings = []
    for host_port, container_port in ports:
        for protocol in ("tcp", "udp"):
            mappings.append(
                {"HostPort": host_port, "ContainerPort": container_port, "Protocol": protocol, "HostIP": host_ip}
            )
    return mappings


# ----------------------------------------------------------------- processes


def _format_argv(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def _run(argv, *, input_bytes=None, env=None, check=True, timeout=COMMAND_TIMEOUT_S):
    """Run argv (no shell) and return the CompletedProcess with bytes output."""
    try:
        proc = subprocess.run(
            [str(a) for a in argv],
            input=input_bytes,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(
            f"command not found: {argv[0]} (install iproute2, iptables, nftables and util-linux)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{_format_argv(argv)} timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise LabError(f"{_format_argv(argv)} failed with exit status {proc.returncode}: {message}")
    return proc


def _run_text(argv, **kwargs):
    return _run(argv, **kwargs).stdout.decode(errors="replace")


def _run_json(argv, default):
    text = _run_text(argv).strip()
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LabError(f"{_format_argv(argv)} printed invalid JSON: {exc}") from exc


def _process_start_time(pid):
    """Return field 22 of /proc/PID/stat (start time in clock ticks), or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def _process_has_env(pid, marker):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return False
    return marker.encode() in entries


def _netns_inode_of(pid):
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    match = re.match(r"^net:\[(\d+)\]$", link)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------- host lock


class _HostLock:
    """An flock on LOCK_PATH, taken by every cnilab process on this host.

    It serialises cnilab instances so that one lab never removes a shared
    chain while another lab is adding rules to it. Re-entrant within a
    process. Tools other than cnilab do not take it.
    """

    def __init__(self):
        self._fd = None
        self._depth = 0

    def __enter__(self):
        if self._depth == 0:
            os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
            fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(fd)
                        raise LabError(
                            f"could not lock {LOCK_PATH} within {LOCK_TIMEOUT_S} s: another cnilab process holds it"
                        ) from None
                    time.sleep(0.05)
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)
            self._fd = None
        return False


_HOST_LOCK = _HostLock()


# ----------------------------------------------------------------- reading the host


def _unescape_mountinfo(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_fstypes():
    """Return {mount point: fstype} from /proc/self/mountinfo, where the last (top) mount wins."""
    mounts = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and right:
                mounts[_unescape_mountinfo(fields[4])] = right.split()[0]
    return mounts


def netns_kind(path, mounts=None):
    """Return "nsfs" (a live namespace bind mount), "file" (a stale regular file), "other", or None if absent."""
    if not os.path.lexists(path):
        return None
    if mounts is None:
        mounts = _mount_fstypes()
    if mounts.get(os.path.realpath(path)) == "nsfs":
        return "nsfs"
    if os.path.isfile(path) and not os.path.islink(path):
        return "file"
    return "other"


def _namespace_pids():
    """Return {network namespace inode: sorted pids} for every process."""
    owners = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            inode = _netns_inode_of(entry)
            if inode is not None:
                owners.setdefault(inode, []).append(int(entry))
    for pids in owners.values():
        pids.sort()
    return owners


def _expand_ports(spec):
    ports = []
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if low.isdigit() and (not high or high.isdigit()):
            ports.extend(range(int(low), int(high or low) + 1))
    return ports


_VALUE_OPTIONS = {
    "-s": "src",
    "-d": "dst",
    "-p": "proto",
    "-o": "out_iface",
    "-i": "in_iface",
    "--comment": "comment",
    "-j": "target",
    "--to-destination": "to_destination",
}


def parse_rule(family, table, line, position):
    """Parse one `-A CHAIN ...` line of iptables-save into a dict (negated matches are skipped)."""
    tokens = shlex.split(line)
    rule = {
        "family": family,
        "table": table,
        "chain": tokens[1],
        "line": line,
        "args": tokens[2:],
        "position": position,
        "src": None,
        "dst": None,
        "proto": None,
        "out_iface": None,
        "in_iface": None,
        "comment": None,
        "target": None,
        "to_destination": None,
        "ports": [],
    }
    negate = False
    i = 2
    while i < len(tokens):
        token = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        if token == "!":
            negate = True
            i += 1
            continue
        if token in _VALUE_OPTIONS and value is not None:
            if not negate:
                rule[_VALUE_OPTIONS[token]] = value
            i += 2
        elif token in ("--dports", "--dport") and value is not None:
            if not negate:
                rule["ports"].extend(_expand_ports(value))
            i += 2
        else:
            i += 1
        negate = False
    return rule


def parse_iptables_save(family, text):
    """Parse iptables-save output into {"chains": {(table, chain)}, "rules": [rule dicts in order]}."""
    chains = set()
    rules = []
    positions = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and table:
            chains.add((table, line[1:].split()[0]))
        elif line.startswith("-A ") and table:
            chain = line.split()[1]
            positions[(table, chain)] = positions.get((table, chain), 0) + 1
            rules.append(parse_rule(family, table, line, positions[(table, chain)]))
    return {"chains": chains, "rules": rules}


def read_iptables():
    """Return {family: parsed iptables-save} for ipv4 and ipv6."""
    result = {}
    for family, _, save in FAMILIES:
        proc = _run([save], check=False)
        text = proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""
        result[family] = parse_iptables_save(family, text)
    return result


def _host_ip(value):
    """Return the address of a "-s/-d" value when it names exactly one host (/32 or /128), else None."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if net.num_addresses == 1:
        return str(net.network_address)
    return None


def _overlaps(value, subnet):
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return net.version == subnet.version and net.overlaps(subnet)


def delete_rule(rule):
    """Delete one parsed rule by its specification (not its position, which other programs may shift)."""
    tool = "iptables" if rule["family"] == "ipv4" else "ip6tables"
    _run([tool, "-w", "-t", rule["table"], "-D", rule["chain"]] + rule["args"], check=False)


def drop_chain(family, table, chain):
    """Flush and delete a chain if it exists. A chain that other rules still jump to stays."""
    tool = "iptables" if family == "ipv4" else "ip6tables"
    if _run([tool, "-w", "-t", table, "-n", "-L", chain], check=False).returncode != 0:
        return
    _run([tool, "-w", "-t", table, "-F", chain], check=False)
    _run([tool, "-w", "-t", table, "-X", chain], check=False)


def _rule_comment(rule):
    match = COMMENT_RE.match(rule["comment"] or "")
    return match.groupdict() if match else None


# ----------------------------------------------------------------- the lab


class Lab:
    """One CNI bridge network's worth of real, deliberately leaked allocation state.

    Creating a Lab checks that nothing of its network exists yet (bridge,
    route over the subnet, iptables rules, reservations, cache files, a state
    file), records a baseline of the shared state it may change, and writes
    its state file. It changes nothing else until add().
    """

    def __init__(
        self,
        network="nmtest",
        bridge="nmtest0",
        subnet="172.26.80.0/24",
        ipam_dir=None,
        cache_dir=None,
        cni_path="/usr/lib/cni",
        legacy_ipam=False,
        legacy_ipam_dir=None,
        host_ip="",
        state_file=None,
        holder_seconds=3600,
        register_atexit=True,
    ):
        _require_root()
        _validate_names(network, bridge)
        subnet_net = _validate_subnet(subnet)
        _check_plugins(cni_path)
        if not isinstance(holder_seconds, int) or holder_seconds < 1:
            raise LabError(f"holder_seconds must be a positive integer, got {holder_seconds!r}")
        state_file = state_file or default_state_file(network)
        created = []
        with _HOST_LOCK:
            if os.path.exists(state_file):
                raise LabError(_state_file_exists_message(state_file))
            state = {
                "version": 1,
                "owner_pid": os.getpid(),
                "network": network,
                "bridge": bridge,
                "subnet": str(subnet_net),
                "cni_path": cni_path,
                "legacy_ipam": bool(legacy_ipam),
                "host_ip": host_ip,
                "holder_seconds": holder_seconds,
                "ipam_dir": None,
                "legacy_ipam_dir": None,
                "cache_dir": None,
                "created_dirs": [],
                "baseline": None,
                "allocs": {},
            }
            try:
                for key, given, label in (
                    ("ipam_dir", ipam_dir, "ipam"),
                    ("legacy_ipam_dir", legacy_ipam_dir, "legacy-ipam"),
                    ("cache_dir", cache_dir, "cache"),
                ):
                    if given is None:
                        path = tempfile.mkdtemp(prefix=f"cnilab-{network}-{label}-")
                        created.append(path)
                    else:
                        path = os.path.abspath(given)
                    state[key] = path
                state["created_dirs"] = list(created)
                self._attach(state, state_file)
                self._check_unused()
                state["baseline"] = self._take_baseline()
                self._save_state()
            except BaseException:
                for path in created:
                    shutil.rmtree(path, ignore_errors=True)
                raise
        self._register_atexit(register_atexit)

    # ---- construction helpers

    @classmethod
    def load(cls, state_file, register_atexit=False):
        """Return the Lab recorded in state_file (written by a Lab or the CLI)."""
        _require_root()
        try:
            with open(state_file, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            raise LabError(f"state file {state_file} not found: no lab was created with it") from None
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read state file {state_file}: {exc}; remove it and run teardown --force") from exc
        lab = cls.__new__(cls)
        lab._attach(state, state_file)
        lab._register_atexit(register_atexit)
        return lab

    @classmethod
    def recover(cls, network, bridge, subnet, ipam_dirs=(), cache_dir=None, cni_path="/usr/lib/cni"):
        """Return a Lab for removing a network's leftovers when no state file exists.

        It has no baseline of its own, so its teardown removes shared
        chains, nf_tables tables and the ip_forward change only where
        SHARED_REGISTRY records that a cnilab lab created them and nothing uses them
        any more. ipam_dirs are host-local dataDirs to scan for
        reservations. No state file is written.
        """
        _require_root()
        _validate_names(network, bridge)
        subnet_net = _validate_subnet(subnet)
        dirs = [os.path.abspath(d) for d in ipam_dirs] + [None, None]
        state = {
            "version": 1,
            "owner_pid": os.getpid(),
            "network": network,
            "bridge": bridge,
            "subnet": str(subnet_net),
            "cni_path": cni_path,
            "legacy_ipam": False,
            "host_ip": "",
            "holder_seconds": 1,
            "ipam_dir": dirs[0],
            "legacy_ipam_dir": dirs[1],
            "cache_dir": os.path.abspath(cache_dir) if cache_dir else None,
            "created_dirs": [],
            "baseline": None,
            "allocs": {},
        }
        lab = cls.__new__(cls)
        lab._attach(state, None)
        lab._register_atexit(False)
        return lab

    def _attach(self, state, state_file):
        self._state = state
        self.state_file = state_file
        self.network = state["network"]
        self.bridge = state["bridge"]
        self.subnet = state["subnet"]
        self._subnet = ipaddress.ip_network(state["subnet"])
        self.cni_path = state["cni_path"]
        self.legacy_ipam = state["legacy_ipam"]
        self.host_ip = state["host_ip"]
        self.ipam_dir = state["ipam_dir"]
        self.legacy_ipam_dir = state["legacy_ipam_dir"]
        self.cache_dir = state["cache_dir"]
        self._holder_procs = {}
        self._add_progress = None
        self._torn_down = False
        self._last_report = None

    def _register_atexit(self, enabled):
        if enabled:
            atexit.register(self._teardown_at_exit)

    def _teardown_at_exit(self):
        if self._torn_down:
            return
        try:
            self.teardown()
        except Exception as exc:  # noqa: BLE001 - atexit must not raise; report instead
            print(f"cnilab: teardown at exit of network {self.network} failed: {exc}", file=sys.stderr)

    def _save_state(self):
        if self.state_file is None:
            return
        directory = os.path.dirname(self.state_file)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cnilab-state-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_file)

    # ---- derived names and paths

    @property
    def ipam_data_dir(self):
        """host-local's dataDir in this lab's conflist (the legacy directory when legacy_ipam)."""
        return self.legacy_ipam_dir if self.legacy_ipam else self.ipam_dir

    @property
    def reservation_dir(self):
        """The directory host-local writes this network's reservation files to."""
        return os.path.join(self.ipam_data_dir, self.network)

    def conflist(self):
        """Return this lab's conflist bytes, as Nomad generates them."""
        return nomad_conflist(self.network, self.bridge, self.subnet, self.ipam_data_dir)

    def netns_path(self, alloc_id):
        return os.path.join(NETNS_DIR, alloc_id)

    def cache_path(self, alloc_id):
        return os.path.join(self.cache_dir, f"{self.network}-{alloc_id}-{IFNAME}")

    def masq_chain(self, alloc_id):
        return masq_chain_name(self.network, alloc_id)

    def dnat_chain(self, alloc_id):
        return dnat_chain_name(self.network, alloc_id)

    def alloc_ids(self):
        """Return the IDs of the allocations this lab created and has not deleted, sorted."""
        return sorted(self._state["allocs"])

    def product_paths(self):
        """Return the paths nomad-medic's node scope must use to see this lab (struct host_paths fields)."""
        return {
            "netns_dir": NETNS_DIR,
            "cni_cache_dir": self.cache_dir,
            "ipam_dir": self.ipam_dir,
            "ipam_dir_legacy": self.legacy_ipam_dir,
            "network_name": self.network,
            "bridge_name": self.bridge,
            "cni_path": self.cni_path,
        }

    def _ipam_dirs(self):
        """Return [(network reservation dir, legacy flag)] for both IPAM layouts."""
        dirs = []
        if self.ipam_dir:
            dirs.append((os.path.join(self.ipam_dir, self.network), False))
        if self.legacy_ipam_dir:
            dirs.append((os.path.join(self.legacy_ipam_dir, self.network), True))
        return dirs

    # ---- preconditions and baseline

    def _check_unused(self):
        problems = []
        links = _run_json(["ip", "-j", "link", "show"], [])
        if any(link.get("ifname") == self.bridge for link in links):
            problems.append(f"interface {self.bridge} exists")
        for route in _run_json(["ip", "-j", "-4", "route", "show", "table", "all"], []):
            dst = route.get("dst", "")
            if dst and dst != "default" and _overlaps(dst, self._subnet):
                problems.append(f"route {dst} dev {route.get('dev')} overlaps subnet {self.subnet}")
        for family, parsed in read_iptables().items():
            for rule in parsed["rules"]:
                if self._rule_mentions_network(rule):
                    problems.append(f"{family} {rule['table']} rule: {rule['line']}")
        for directory, _ in self._ipam_dirs():
            if os.path.isdir(directory) and any(_is_ip(n) for n in os.listdir(directory)):
                problems.append(f"reservations exist in {directory}")
        if self.cache_dir and os.path.isdir(self.cache_dir):
            names = [n for n in os.listdir(self.cache_dir) if n.startswith(self.network + "-")]
            if names:
                problems.append(f"cache files {names} exist in {self.cache_dir}")
        if problems:
            raise LabError(
                f"network {self.network} (bridge {self.bridge}, subnet {self.subnet}) is already in use: "
                + "; ".join(problems)
                + ". Pick other names, or remove the leftovers with: python3 cnilab.py teardown --force "
                f"--network {self.network} --bridge {self.bridge} --subnet {self.subnet}"
            )

    def _take_baseline(self):
        baseline = shared_baseline()
        baseline["ipam_network_dirs"] = sorted(d for d, _ in self._ipam_dirs() if os.path.isdir(d))
        return baseline

    # ---- add / leak

    def add(self, alloc_id, ports=(), leak_mode="record", hold=False, host_ip=None):
        """Create one allocation's network state as a Nomad client does, then leak it.

        ports: (host_port, container_port) pairs, or plain ints for the same
        port on both sides. leak_mode selects what else the crash lost:
        "record" (nothing: only the Nomad-side record is gone), "netns"
        (namespace unmounted and unlinked), "stale-file" (unmounted, an empty
        regular file left at its path) or "held" (unlinked while a process
        started by the lab stays inside). hold=True (record mode only) starts
        such a process inside the still-named namespace.

        Returns a dict with alloc_id, ip, ip_cidr, veth (host side), netns,
        cache, reservation, ports, port_mappings, leak_mode and holder_pid.
        Raises LabError, after removing what it created, when CNI ADD fails.
        """
        _validate_alloc_id(alloc_id)
        ports = _normalise_ports(ports)
        if leak_mode not in LEAK_MODES:
            raise LabError(f"invalid leak_mode {leak_mode!r}: use one of {', '.join(LEAK_MODES)}")
        if hold and leak_mode != "record":
            raise LabError(f"hold=True applies to leak_mode 'record' only, got {leak_mode!r} ('held' already holds)")
        host_ip = self.host_ip if host_ip is None else host_ip
        self._require_active()
        with _HOST_LOCK:
            self._require_new_alloc(alloc_id)
            netns = self.netns_path(alloc_id)
            conflist = self.conflist()
            capability_args = {"portMappings": port_mappings(ports, host_ip)}
            cni_args = nomad_cni_args(alloc_id)
            self._state["allocs"][alloc_id] = {
                "ports": [list(p) for p in ports],
                "leak_mode": "record",
                "holder": None,
            }
            self._save_state()
            try:
                _run(["ip", "netns", "add", alloc_id])
            except LabError:
                self._state["allocs"].pop(alloc_id, None)
                self._save_state()
                raise
            try:
                self._ensure_admin_chain()
                result = self._cni_add(alloc_id, netns, conflist, capability_args, cni_args)
                self._write_cache(alloc_id, netns, conflist, result, capability_args, cni_args)
            except BaseException as exc:
                self._roll_back_add(alloc_id)
                if isinstance(exc, LabError):
                    raise LabError(f"adding alloc {alloc_id} to network {self.network} failed: {exc}") from exc
                raise
            if self._state["baseline"] is not None:
                register_shared_changes(self._state["baseline"])
            if hold:
                self._start_holder(alloc_id)
            self._apply_leak_mode(alloc_id, leak_mode)
            return self.describe(alloc_id)

    def leak(self, alloc_id, leak_mode):
        """Apply a leak mode to an allocation that is still in "record" mode, as if it crashed later.

        Returns describe(alloc_id).
        """
        if leak_mode not in LEAK_MODES:
            raise LabError(f"invalid leak_mode {leak_mode!r}: use one of {', '.join(LEAK_MODES)}")
        self._require_active()
        with _HOST_LOCK:
            record = self._require_known(alloc_id)
            if record["leak_mode"] != "record":
                raise LabError(
                    f"alloc {alloc_id} is already in leak mode {record['leak_mode']!r}; only 'record' allocs can change"
                )
            if leak_mode in ("netns", "stale-file") and self._holder_alive(alloc_id) is not None:
                raise LabError(
                    f"alloc {alloc_id} has a holder process, so its namespace would outlive the unlink; "
                    "use leak_mode 'held', or kill_holder() first"
                )
            self._apply_leak_mode(alloc_id, leak_mode)
            return self.describe(alloc_id)

    def describe(self, alloc_id):
        """Return what add() returns, read from the cache file and the lab's record."""
        record = self._require_known(alloc_id)
        cache = self._read_cache(alloc_id)
        ip_cidr = None
        veth = None
        if cache is not None:
            ips = [entry.get("address") for entry in cache.get("result", {}).get("ips", [])]
            ip_cidr = ips[0] if ips else None
            veth = _host_veth_from_result(cache.get("result", {}), self.bridge)
        holder = record.get("holder")
        return {
            "alloc_id": alloc_id,
            "ip": ip_cidr.split("/")[0] if ip_cidr else None,
            "ip_cidr": ip_cidr,
            "veth": veth,
            "netns": self.netns_path(alloc_id),
            "cache": self.cache_path(alloc_id),
            "reservation": os.path.join(self.reservation_dir, ip_cidr.split("/")[0]) if ip_cidr else None,
            "ports": [tuple(p) for p in record["ports"]],
            "port_mappings": port_mappings([tuple(p) for p in record["ports"]], self.host_ip),
            "leak_mode": record["leak_mode"],
            "holder_pid": holder["pid"] if holder else None,
        }

    def _require_active(self):
        if self._torn_down:
            raise LabError(f"lab of network {self.network} was torn down; create a new Lab")

    def _require_known(self, alloc_id):
        record = self._state["allocs"].get(alloc_id)
        if record is None:
            raise LabError(f"alloc {alloc_id} was not created by the lab of network {self.network}")
        return record

    def _require_new_alloc(self, alloc_id):
        record = self._state["allocs"].get(alloc_id)
        if record is not None and record["leak_mode"] != "deleted":
            raise LabError(f"alloc {alloc_id} already exists in network {self.network}; delete() it first")
        if os.path.lexists(self.netns_path(alloc_id)):
            raise LabError(f"{self.netns_path(alloc_id)} already exists; use another alloc ID")
        if os.path.lexists(self.cache_path(alloc_id)):
            raise LabError(f"{self.cache_path(alloc_id)} already exists; use another alloc ID")

    def _ensure_admin_chain(self):
        """Create filter/NOMAD-ADMIN with this bridge's ACCEPT rule, as Nomad does before CNI ADD."""
        if _run(["iptables", "-w", "-t", "filter", "-n", "-L", ADMIN_CHAIN], check=False).returncode != 0:
            created = _run(["iptables", "-w", "-t", "filter", "-N", ADMIN_CHAIN], check=False)
            exists = _run(["iptables", "-w", "-t", "filter", "-n", "-L", ADMIN_CHAIN], check=False)
            if created.returncode != 0 and exists.returncode != 0:
                raise LabError(f"cannot create filter chain {ADMIN_CHAIN}: {created.stderr.decode().strip()}")
        rule = ["-o", self.bridge, "-d", self.subnet, "-j", "ACCEPT"]
        if _run(["iptables", "-w", "-t", "filter", "-C", ADMIN_CHAIN] + rule, check=False).returncode != 0:
            _run(["iptables", "-w", "-t", "filter", "-A", ADMIN_CHAIN] + rule)

    def _apply_leak_mode(self, alloc_id, leak_mode):
        record = self._state["allocs"][alloc_id]
        if leak_mode == "netns":
            self._remove_netns(alloc_id)
        elif leak_mode == "stale-file":
            self._remove_netns(alloc_id)
            # What an unmounted namespace's mount point looks like when only umount ran.
            fd = os.open(self.netns_path(alloc_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.fchmod(fd, 0o644)
            os.close(fd)
        elif leak_mode == "held":
            if record.get("holder") is None:
                self._start_holder(alloc_id)
            _run(["ip", "netns", "del", alloc_id])
        record["leak_mode"] = leak_mode
        self._save_state()
        if leak_mode in ("netns", "stale-file") and self._holder_alive(alloc_id) is None:
            # The kernel destroys an unreferenced namespace (and the veth pair
            # with it) asynchronously, so wait until callers see the settled state.
            self._wait_for(lambda: not self.inventory(alloc_id)["veths"], f"veth of alloc {alloc_id} to disappear")

    def _wait_for(self, predicate, what):
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {SETTLE_TIMEOUT_S} s waiting for {what}")
            time.sleep(0.05)

    # ---- holder processes

    def _holder_marker(self, alloc_id):
        return f"{HOLDER_ENV}={self.network}/{alloc_id}"

    def _start_holder(self, alloc_id):
        """Start `sleep` inside the alloc's namespace and record its pid and start time."""
        netns = self.netns_path(alloc_id)
        inode = os.stat(netns).st_ino
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env[HOLDER_ENV] = f"{self.network}/{alloc_id}"
        proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", "--", "sleep", str(self._state["holder_seconds"])],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        self._holder_procs[proc.pid] = proc
        try:
            self._wait_for(
                lambda: _netns_inode_of(proc.pid) == inode or proc.poll() is not None,
                f"holder pid {proc.pid} to enter {netns}",
            )
        except LabError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is not None:
            raise LabError(f"holder process for {netns} exited with status {proc.returncode}; is nsenter installed?")
        record = self._state["allocs"][alloc_id]
        record["holder"] = {"pid": proc.pid, "start_time": _process_start_time(proc.pid)}
        self._save_state()
        return proc.pid

    def _holder_alive(self, alloc_id):
        holder = self._state["allocs"].get(alloc_id, {}).get("holder")
        if not holder:
            return None
        pid = holder["pid"]
        if _process_start_time(pid) != holder["start_time"]:
            return None
        if not _process_has_env(pid, self._holder_marker(alloc_id)):
            return None
        return pid

    def kill_holder(self, alloc_id):
        """Kill the process the lab started inside alloc_id's namespace, if it still runs.

        The pid is checked against its recorded start time and environment
        marker first, so a recycled pid is never signalled. Returns the pid
        killed, or None.
        """
        pid = self._holder_alive(alloc_id)
        record = self._state["allocs"].get(alloc_id)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 2.0
            while _process_start_time(pid) is not None and time.monotonic() < deadline:
                self._reap(pid)
                time.sleep(0.02)
            if _process_start_time(pid) is not None:
                os.kill(pid, signal.SIGKILL)
            self._reap(pid, block=True)
        if record is not None and record.get("holder"):
            record["holder"] = None
            self._save_state()
        return pid

    def _reap(self, pid, block=False):
        proc = self._holder_procs.get(pid)
        if proc is None:
            return
        try:
            if block:
                proc.wait(timeout=5)
            elif proc.poll() is None:
                return
        except subprocess.TimeoutExpired:
            return
        self._holder_procs.pop(pid, None)

    # ---- CNI invocation (what libcni does)

    def _plugin_env(self, command, alloc_id, netns, cni_args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") and k != HOLDER_ENV}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": alloc_id,
                "CNI_NETNS": netns,
                "CNI_IFNAME": IFNAME,
                "CNI_PATH": self.cni_path,
                "CNI_ARGS": ";".join(f"{k}={v}" for k, v in cni_args),
            }
        )
        return env

    def _plugin_binary(self, plugin_type):
        for directory in self.cni_path.split(":"):
            path = os.path.join(directory, plugin_type)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise LabError(f"CNI plugin {plugin_type!r} not found in {self.cni_path} (apt-get install containernetworking-plugins)")

    def _invoke_plugin(self, command, plugin, conflist, prev_result, capability_args, alloc_id, netns, cni_args):
        """Run one plugin with libcni's stdin: the plugin object plus name, cniVersion, prevResult, runtimeConfig."""
        conf = dict(plugin)
        conf["name"] = conflist["name"]
        conf["cniVersion"] = conflist["cniVersion"]
        if prev_result is not None:
            conf["prevResult"] = prev_result
        runtime = {
            key: capability_args[key]
            for key, wanted in plugin.get("capabilities", {}).items()
            if wanted and key in capability_args
        }
        if runtime:
            conf["runtimeConfig"] = runtime
        # libcni re-marshals the plugin object from a Go map, so its keys come out sorted.
        stdin = json.dumps(conf, sort_keys=True, separators=(",", ":")).encode()

        proc = _run(
            [self._plugin_binary(plugin["type"])],
            input_bytes=stdin,
            env=self._plugin_env(command, alloc_id, netns, cni_args),
            check=False,
            timeout=PLUGIN_TIMEOUT_S,
        )
        if proc.returncode != 0:
            try:
                error = json.loads(proc.stdout)
            except ValueError:
                error = {"msg": (proc.stdout + proc.stderr).decode(errors="replace").strip()}
            raise PluginError(plugin["type"], command, error.get("code"), error.get("msg"), error.get("details"))

        if command != "ADD":
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError as exc:
            raise LabError(f"CNI plugin {plugin['type']} printed an invalid ADD result: {exc}") from exc

    def _cni_add(self, alloc_id, netns, conflist_bytes, capability_args, cni_args):
        conflist = json.loads(conflist_bytes)
        result = None
        self._add_progress = None  # the last successful plugin's result, for the rollback's DEL
        for plugin in conflist["plugins"]:
            result = self._invoke_plugin("ADD", plugin, conflist, result, capability_args, alloc_id, netns, cni_args)
            self._add_progress = result
        return result

    def _cni_del(self, alloc_id, netns, conflist_bytes, prev_result, capability_args, cni_args):
        """Run DEL in reverse plugin order with the cached result as every plugin's prevResult, stopping at the first failure."""
        conflist = json.loads(conflist_bytes)
        for plugin in reversed(conflist["plugins"]):
            self._invoke_plugin("DEL", plugin, conflist, prev_result, capability_args, alloc_id, netns, cni_args)

    def _write_cache(self, alloc_id, netns, conflist_bytes, result, capability_args, cni_args):
        """Write the cache file as libcni's cacheAdd does (struct field order, compact, result keys sorted, mode 0600)."""
        sorted_result = json.loads(json.dumps(result, sort_keys=True))
        data = {
            "kind": "cniCacheV1",
            "containerId": alloc_id,
            "config": base64.b64encode(conflist_bytes).decode(),
            "ifName": IFNAME,
            "networkName": self.network,
            "netns": netns,
            "cniArgs": cni_args,
            "capabilityArgs": capability_args,
            "result": sorted_result,
        }
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".cnilab-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, separators=(",", ":"), ensure_ascii=False))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.cache_path(alloc_id))

    def _read_cache(self, alloc_id):
        try:
            with open(self.cache_path(alloc_id), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _roll_back_add(self, alloc_id):
        netns = self.netns_path(alloc_id)
        progress = self._add_progress
        if netns_kind(netns) == "nsfs":
            with contextlib.suppress(LabError):
                self._cni_del(
                    alloc_id,
                    netns,
                    self.conflist(),
                    progress,
                    {"portMappings": port_mappings(self._state["allocs"][alloc_id]["ports"], self.host_ip)},
                    nomad_cni_args(alloc_id),
                )
        with contextlib.suppress(LabError):
            self.force_clean(alloc_id)
        self._state["allocs"].pop(alloc_id, None)
        self._save_state()
        if self._state["baseline"] is not None:
            register_shared_changes(self._state["baseline"])

    # ---- delete (the reference order)

    def delete(self, alloc_id):
        """Remove one allocation the way a correct cleaner does, and return what is left of it.

        Steps: read the cache file; unlink the namespace path if it is a
        stale regular file; CNI DEL of the cached conflist in reverse plugin
        order (prevResult = cached result, runtimeConfig.portMappings =
        cached capabilityArgs, CNI_ARGS = cached cniArgs) while the namespace
        is still mounted; unmount and unlink the namespace; delete the cache
        file. No forced cleanup follows, so an alloc whose namespace was
        already gone keeps its ipMasq chain and POSTROUTING jump, as with
        Nomad. Returns artefacts(alloc_id) after the steps (empty when
        nothing is left). Raises LabError when there is no cache file or a
        plugin fails (the cache file then stays, as libcni leaves it).
        """
        self._require_active()
        with _HOST_LOCK:
            cache = self._read_cache(alloc_id)
            if cache is None:
                raise LabError(
                    f"no readable cache file {self.cache_path(alloc_id)}: CNI DEL needs the cached result "
                    "and port mappings; use force_clean() instead"
                )
            conflist_bytes = base64.b64decode(cache["config"])
            netns = cache.get("netns") or self.netns_path(alloc_id)
            if netns_kind(netns) == "file":
                os.unlink(netns)
            self._cni_del(
                alloc_id,
                netns,
                conflist_bytes,
                cache.get("result"),
                cache.get("capabilityArgs") or {},
                cache.get("cniArgs") or [],
            )
            self._remove_netns(alloc_id)
            os.unlink(self.cache_path(alloc_id))
            if alloc_id in self._state["allocs"]:
                self._state["allocs"][alloc_id]["leak_mode"] = "deleted"
                self._save_state()
            return self.artefacts(alloc_id)

    def _remove_netns(self, alloc_id):
        """Unmount (MNT_DETACH) and unlink the namespace as Nomad's UnmountNS does, or unlink a stale file."""
        path = self.netns_path(alloc_id)
        kind = netns_kind(path)
        if kind == "nsfs":
            _run(["ip", "netns", "del", alloc_id])
        elif kind == "file":
            os.unlink(path)

    # ---- forced cleanup (by name, comment and IP)

    def force_clean(self, alloc_id):
        """Remove whatever is left of one allocation without CNI, and return what is still left.

        Removes: the host veths of the alloc, its namespace (or stale file),
        the POSTROUTING and CNI-HOSTPORT-DNAT jumps tagged with its ID and
        its CNI-<hash> / CNI-DN-<hash> chains, the CNI-FORWARD rules of its
        IPs unless another alloc has a reservation for that IP, its
        reservation files in both IPAM directories and its cache file. A
        namespace held by a process stays alive until kill_holder().
        """
        with _HOST_LOCK:
            inv = self.inventory(alloc_id)
            ips = self._alloc_ips(inv)
            veths = {v["name"] for v in inv["veths"]}
            cache = self._read_cache(alloc_id)
            if cache is not None:
                host_veth = _host_veth_from_result(cache.get("result", {}), self.bridge)
                if host_veth:
                    veths.add(host_veth)
            for name in sorted(veths):
                if IFACE_RE.match(name) and name != self.bridge:
                    _run(["ip", "link", "del", name], check=False)
            self._remove_netns(alloc_id)
            for rule in inv["rules"]:
                if rule["role"] in ("ipmasq-jump", "hostport-jump", "tagged"):
                    delete_rule(rule)
            for chain in inv["chains"]:
                drop_chain(chain["family"], chain["table"], chain["name"])
            owners = self._reservation_owners()
            for rule in self.inventory()["rules"]:
                if rule["role"] != "forward-accept" or rule["ip"] not in ips:
                    continue
                if owners.get(rule["ip"], alloc_id) != alloc_id:
                    continue
                delete_rule(rule)
            for reservation in inv["reservations"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(reservation["path"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cache_path(alloc_id))
            return self.artefacts(alloc_id)

    @staticmethod
    def _alloc_ips(inv):
        ips = set()
        for reservation in inv["reservations"]:
            ips.add(reservation["ip"])
        for cache in inv["caches"]:
            ips.update(cache["ips"])
        for rule in inv["rules"]:
            if rule["ip"]:
                ips.add(rule["ip"])
        for unnamed in inv["netns_unnamed"]:
            ips.update(unnamed["ips"])
        return ips

    def _reservation_owners(self):
        owners = {}
        for directory, _ in self._ipam_dirs():
            for name, content in _list_reservations(directory):
                owners.setdefault(name, content.split("\r\n")[0])
        return owners

    # ---- inventory

    def inventory(self, alloc_id=None):
        """Return what exists on the host now for this lab's network, read from the system.

        Keys: network, bridge (dict or None), netns, netns_unnamed, veths,
        reservations, ipam_state, caches, chains, rules, conflicts, shared.
        Namespaces are looked up under /var/run/netns by every alloc ID the
        lab created plus every ID the system names for this network (cache
        files, reservations, rule comments, veth peers). With alloc_id,
        every list contains only that alloc's entries, conflicts only those it
        takes part in, and bridge, ipam_state and shared are empty.
        """
        raw = self._read_host()
        inv = self._build_inventory(raw)
        if alloc_id is None:
            return inv
        filtered = {"network": self.network, "bridge": None, "ipam_state": [], "shared": {"chains": [], "rules": []}}
        for key in ("netns", "netns_unnamed", "veths", "reservations", "caches", "chains", "rules"):
            filtered[key] = [item for item in inv[key] if item["alloc_id"] == alloc_id]
        filtered["conflicts"] = [
            c
            for c in inv["conflicts"]
            if c["effective"]["alloc_id"] == alloc_id or any(s["alloc_id"] == alloc_id for s in c["shadowed"])
        ]
        return filtered

    def artefacts(self, alloc_id):
        """Return one alloc's artefacts as a sorted list of strings (empty when nothing is left).

        A snapshot covers the namespace (kind and holder pids), the veth, the
        reservation content, a hash of the cache file, the chains and the
        rules as iptables-save prints them (positions excluded). So two
        snapshots are equal exactly when cleaning another alloc left this
        one unchanged.
        """
        inv = self.inventory(alloc_id)
        items = []
        for ns in inv["netns"]:
            items.append(f"netns {ns['path']} kind={ns['kind']} holders={ns['holders']}")
        for ns in inv["netns_unnamed"]:
            items.append(f"netns-unnamed {ns['ns']} veth={ns['veth']} ips={ns['ips']} holders={ns['pids']}")
        for veth in inv["veths"]:
            items.append(f"veth {veth['name']} master={veth['master']} peer={veth['peer_netns']}")
        for reservation in inv["reservations"]:
            items.append(f"reservation {reservation['path']} content={reservation['content']!r}")
        for cache in inv["caches"]:
            items.append(f"cache {cache['path']} sha256={cache['sha256']}")
        for chain in inv["chains"]:
            items.append(f"chain {chain['family']} {chain['table']} {chain['name']}")
        for rule in inv["rules"]:
            items.append(f"rule {rule['family']} {rule['table']} {rule['line']}")
        return sorted(items)

    def effective_dnat(self, port, proto="tcp", family="ipv4"):
        """Return the CNI-HOSTPORT-DNAT jump that wins for a host port, or None.

        The first jump whose protocol and --dports match wins, whichever
        network it belongs to. Returns a dict with alloc_id and network (from
        its comment), chain, position, and dnat_to (the chain's DNAT target
        for that port, "IP:PORT", or None).
        """
        parsed = read_iptables()[family]
        for rule in parsed["rules"]:
            if rule["table"] != "nat" or rule["chain"] != "CNI-HOSTPORT-DNAT":
                continue
            if not DNAT_CHAIN_RE.match(rule["target"] or ""):
                continue
            if rule["proto"] not in (None, proto) or port not in rule["ports"]:
                continue
            comment = _rule_comment(rule) or {}
            return {
                "alloc_id": comment.get("alloc"),
                "network": comment.get("network"),
                "chain": rule["target"],
                "position": rule["position"],
                "dnat_to": _dnat_target(parsed["rules"], rule["target"], proto, port),
            }
        return None

    def _rule_mentions_network(self, rule):
        comment = _rule_comment(rule)
        if comment and comment["network"] == self.network:
            return True
        if self.bridge in (rule["out_iface"], rule["in_iface"]):
            return True
        return any(v and _overlaps(v, self._subnet) for v in (rule["src"], rule["dst"]))

    def _read_host(self):
        """Collect the raw host state the inventory is built from."""
        mounts = _mount_fstypes()
        raw = {
            "links": _run_json(["ip", "-j", "-d", "link", "show"], []),
            "nsids": _run_json(["ip", "-j", "netns", "list-id"], []),
            "iptables": read_iptables(),
            "mounts": mounts,
            "ns_pids": _namespace_pids(),
            "host_ns": _netns_inode_of("self"),
            "reservations": [],
            "ipam_state": [],
            "caches": [],
            "netns_names": sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else [],
        }
        for directory, legacy in self._ipam_dirs():
            for name, content in _list_reservations(directory):
                path = os.path.join(directory, name)
                raw["reservations"].append((path, name, content, legacy, _file_mode(path)))
            if os.path.isdir(directory):
                for name in sorted(os.listdir(directory)):
                    if not _is_ip(name):
                        path = os.path.join(directory, name)
                        raw["ipam_state"].append({"path": path, "content": _read_text(path)})
        if self.cache_dir and os.path.isdir(self.cache_dir):
            prefix = self.network + "-"
            for name in sorted(os.listdir(self.cache_dir)):
                if name.startswith(prefix):
                    path = os.path.join(self.cache_dir, name)
                    raw["caches"].append((path, _read_bytes(path), _file_mode(path)))
        return raw

    def _build_inventory(self, raw):
        bridge = None
        for link in raw["links"]:
            if link.get("ifname") == self.bridge and link.get("linkinfo", {}).get("info_kind") == "bridge":
                bridge = {"name": self.bridge, "ifindex": link.get("ifindex")}
        nsid_names = {entry.get("nsid"): entry.get("name") for entry in raw["nsids"] if entry.get("name")}
        candidates = set(self._state["allocs"])

        caches = [self._cache_entry(path, data, mode) for path, data, mode in raw["caches"]]
        candidates.update(c["alloc_id"] for c in caches if c["alloc_id"])
        reservations = []
        for path, name, content, legacy, mode in raw["reservations"]:
            lines = content.split("\r\n")
            owner = lines[0]
            reservations.append(
                {
                    "path": path,
                    "ip": name,
                    "alloc_id": owner if ALLOC_ID_RE.match(owner) else None,
                    "ifname": lines[1] if len(lines) > 1 else None,
                    "content": content,
                    "legacy": legacy,
                    "mode": mode,
                }
            )
        candidates.update(r["alloc_id"] for r in reservations if r["alloc_id"])

        veths = []
        for link in raw["links"]:
            if link.get("master") != self.bridge or link.get("linkinfo", {}).get("info_kind") != "veth":
                continue
            peer = nsid_names.get(link.get("link_netnsid"))
            veths.append(
                {
                    "name": link.get("ifname"),
                    "ifindex": link.get("ifindex"),
                    "master": self.bridge,
                    "link_netnsid": link.get("link_netnsid"),
                    "peer_netns": peer,
                    "peer_ifindex": link.get("link_index"),
                    "alloc_id": peer,
                }
            )
        candidates.update(v["alloc_id"] for v in veths if v["alloc_id"])

        all_rules = []
        for family, parsed in raw["iptables"].items():
            all_rules.extend(parsed["rules"])
        for rule in all_rules:
            comment = _rule_comment(rule)
            if comment and comment["network"] == self.network:
                candidates.add(comment["alloc"])

        chain_owner = {}
        for alloc in candidates:
            chain_owner[masq_chain_name(self.network, alloc)] = alloc
            chain_owner[dnat_chain_name(self.network, alloc)] = alloc
        for rule in all_rules:
            comment = _rule_comment(rule)
            if comment and comment["network"] == self.network and rule["target"]:
                if MASQ_CHAIN_RE.match(rule["target"]) or DNAT_CHAIN_RE.match(rule["target"]):
                    chain_owner.setdefault(rule["target"], comment["alloc"])

        chains = []
        for family, parsed in raw["iptables"].items():
            for table, name in sorted(parsed["chains"]):
                if name in chain_owner and (MASQ_CHAIN_RE.match(name) or DNAT_CHAIN_RE.match(name)):
                    rules_in = [r["line"] for r in parsed["rules"] if r["table"] == table and r["chain"] == name]
                    referenced = any(r["table"] == table and r["target"] == name for r in parsed["rules"])
                    chains.append(
                        {
                            "family": family,
                            "table": table,
                            "name": name,
                            "alloc_id": chain_owner[name],
                            "role": "portmap-dnat" if DNAT_CHAIN_RE.match(name) else "bridge-ipmasq",
                            "rules": rules_in,
                            "referenced": referenced,
                        }
                    )
        own_chains = {(c["family"], c["table"], c["name"]) for c in chains}

        # IP -> alloc, from every source that names both.
        ip_owner = {}
        for r in reservations:
            if r["alloc_id"]:
                ip_owner.setdefault(r["ip"], r["alloc_id"])
        for c in caches:
            for ip in c["ips"]:
                if c["alloc_id"]:
                    ip_owner.setdefault(ip, c["alloc_id"])
        for rule in all_rules:
            if rule["chain"] == "POSTROUTING" and rule["target"] in chain_owner and rule["src"]:
                ip = _host_ip(rule["src"])
                if ip:
                    ip_owner.setdefault(ip, chain_owner[rule["target"]])
            if rule["chain"] in chain_owner and rule["to_destination"]:
                ip_owner.setdefault(rule["to_destination"].rsplit(":", 1)[0], chain_owner[rule["chain"]])

        cache_veths = {c["veth"]: c["alloc_id"] for c in caches if c["veth"] and c["alloc_id"]}
        unnamed = self._unnamed_namespaces(raw, veths, nsid_names, ip_owner, cache_veths)
        held_veth_owner = {u["veth"]: u["alloc_id"] for u in unnamed}
        for veth in veths:
            if veth["alloc_id"] is None:
                veth["alloc_id"] = cache_veths.get(veth["name"]) or held_veth_owner.get(veth["name"])

        rules = []
        for rule in all_rules:
            entry = self._classify_rule(rule, chain_owner, own_chains, ip_owner)
            if entry is not None:
                rules.append(entry)

        netns = []
        for name in raw["netns_names"]:
            if name not in candidates:
                continue
            path = os.path.join(NETNS_DIR, name)
            kind = netns_kind(path, raw["mounts"])
            inode = None
            if kind == "nsfs":
                with contextlib.suppress(OSError):
                    inode = os.stat(path).st_ino
            netns.append(
                {
                    "name": name,
                    "path": path,
                    "alloc_id": name,
                    "kind": kind,
                    "mode": _file_mode(path),
                    "inode": inode,
                    "holders": raw["ns_pids"].get(inode, []) if inode else [],
                }
            )

        return {
            "network": self.network,
            "bridge": bridge,
            "netns": netns,
            "netns_unnamed": unnamed,
            "veths": veths,
            "reservations": reservations,
            "ipam_state": raw["ipam_state"],
            "caches": caches,
            "chains": chains,
            "rules": [r for r in rules if not r["shared"]],
            "conflicts": self._conflicts(raw["iptables"], chain_owner, netns),
            "shared": self._shared_view(raw["iptables"], rules),
        }

    def _cache_entry(self, path, data, mode):
        entry = {
            "path": path,
            "alloc_id": None,
            "mode": mode,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "data": None,
            "error": None,
            "ips": [],
            "veth": None,
            "netns": None,
        }
        match = re.match(rf"^{re.escape(self.network)}-(?P<id>.+)-{IFNAME}$", os.path.basename(path))
        if match and ALLOC_ID_RE.match(match.group("id")):
            entry["alloc_id"] = match.group("id")
        try:
            parsed = json.loads(data)
        except (TypeError, ValueError) as exc:
            entry["error"] = f"not valid JSON: {exc}"
            return entry
        entry["data"] = parsed
        if isinstance(parsed, dict):
            if isinstance(parsed.get("containerId"), str) and ALLOC_ID_RE.match(parsed["containerId"]):
                entry["alloc_id"] = parsed["containerId"]
            result = parsed.get("result") or {}
            entry["ips"] = [ip.get("address", "").split("/")[0] for ip in result.get("ips", []) if ip.get("address")]
            entry["veth"] = _host_veth_from_result(result, self.bridge)
            entry["netns"] = parsed.get("netns")
        return entry

    def _unnamed_namespaces(self, raw, veths, nsid_names, ip_owner, cache_veths):
        """Find namespaces with no name whose interface peers with a veth on this bridge."""
        orphans = {v["ifindex"]: v for v in veths if v["link_netnsid"] is not None and v["peer_netns"] is None}
        if not orphans:
            return []
        named = set()
        for name in raw["netns_names"]:
            path = os.path.join(NETNS_DIR, name)
            if netns_kind(path, raw["mounts"]) == "nsfs":
                with contextlib.suppress(OSError):
                    named.add(os.stat(path).st_ino)
        found = []
        for inode, pids in sorted(raw["ns_pids"].items()):
            if inode == raw["host_ns"] or inode in named:
                continue
            proc = _run(["nsenter", f"--net=/proc/{pids[0]}/ns/net", "--", "ip", "-j", "addr", "show"], check=False)
            if proc.returncode != 0:
                continue
            try:
                links = json.loads(proc.stdout or b"[]")
            except ValueError:
                continue
            for link in links:
                veth = orphans.get(link.get("link_index"))
                if veth is None or link.get("link_netnsid") is None:
                    continue
                ips = [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
                owner = cache_veths.get(veth["name"])
                if owner is None:
                    owner = next((ip_owner[ip] for ip in ips if ip in ip_owner), None)
                found.append(
                    {
                        "ns": f"net:[{inode}]",
                        "inode": inode,
                        "pids": pids,
                        "veth": veth["name"],
                        "ifname": link.get("ifname"),
                        "ips": ips,
                        "alloc_id": owner,
                    }
                )
        return found

    def _classify_rule(self, rule, chain_owner, own_chains, ip_owner):
        """Return the inventory entry for a rule of this network, or None for other networks' rules."""
        comment = _rule_comment(rule)
        chain, target = rule["chain"], rule["target"]
        ip = None
        if rule["src"]:
            ip = _host_ip(rule["src"])
        elif rule["dst"]:
            ip = _host_ip(rule["dst"])
        in_own_chain = (rule["family"], rule["table"], chain) in own_chains
        alloc = None
        role = None
        shared = False
        if comment and comment["network"] == self.network:
            alloc = comment["alloc"]
            if chain == "POSTROUTING" and MASQ_CHAIN_RE.match(target or ""):
                role = "ipmasq-jump"
            elif chain == "CNI-HOSTPORT-DNAT" and DNAT_CHAIN_RE.match(target or ""):
                role = "hostport-jump"
            elif in_own_chain:
                role = "ipmasq" if MASQ_CHAIN_RE.match(chain) else "hostport-dnat"
            else:
                role = "tagged"
        elif in_own_chain:
            alloc = chain_owner[chain]
            role = "ipmasq" if MASQ_CHAIN_RE.match(chain) else "hostport-dnat"
        elif target in chain_owner and (rule["family"], rule["table"], target) in own_chains:
            alloc = chain_owner[target]
            role = "ipmasq-jump" if MASQ_CHAIN_RE.match(target) else "hostport-jump"
        elif chain == "CNI-FORWARD" and ip and _overlaps(ip, self._subnet):
            alloc = ip_owner.get(ip)
            role = "forward-accept"
        elif chain == ADMIN_CHAIN and rule["out_iface"] == self.bridge:
            role = "admin"
            shared = True
        elif self._rule_mentions_network(rule):
            role = "other"
        else:
            return None
        return {
            "family": rule["family"],
            "table": rule["table"],
            "chain": chain,
            "line": rule["line"],
            "args": rule["args"],
            "position": rule["position"],
            "alloc_id": alloc,
            "role": role,
            "target": target,
            "ip": ip if role in ("ipmasq-jump", "forward-accept") else None,
            "ports": rule["ports"],
            "shared": shared,
        }

    def _conflicts(self, iptables, chain_owner, netns):
        """Group CNI-HOSTPORT-DNAT jumps by (family, proto, port) and return groups with several chains, one of this network."""
        mounted = {n["name"] for n in netns if n["kind"] == "nsfs"}
        conflicts = []
        for family, parsed in iptables.items():
            groups = {}
            for rule in parsed["rules"]:
                if rule["table"] != "nat" or rule["chain"] != "CNI-HOSTPORT-DNAT":
                    continue
                if not DNAT_CHAIN_RE.match(rule["target"] or ""):
                    continue
                comment = _rule_comment(rule) or {}
                for port in rule["ports"]:
                    claim = {
                        "alloc_id": comment.get("alloc") or chain_owner.get(rule["target"]),
                        "network": comment.get("network"),
                        "chain": rule["target"],
                        "position": rule["position"],
                        "dnat_to": _dnat_target(parsed["rules"], rule["target"], rule["proto"], port),
                    }
                    groups.setdefault((rule["proto"], port), []).append(claim)
            for (proto, port), claims in sorted(groups.items(), key=lambda item: (item[0][1], str(item[0][0]))):
                if len({c["chain"] for c in claims}) < 2:
                    continue
                if not any(c["network"] == self.network or c["chain"] in chain_owner for c in claims):
                    continue
                for claim in claims:
                    claim["netns_mounted"] = claim["alloc_id"] in mounted if claim["network"] == self.network else None
                conflicts.append(
                    {"family": family, "proto": proto, "port": port, "effective": claims[0], "shadowed": claims[1:]}
                )
        return conflicts

    @staticmethod
    def _shared_view(iptables, classified):
        chains = []
        rules = []
        for family, parsed in iptables.items():
            for table, name in sorted(parsed["chains"]):
                if name in SHARED_CHAINS:
                    count = sum(1 for r in parsed["rules"] if r["table"] == table and r["chain"] == name)
                    chains.append({"family": family, "table": table, "name": name, "rules": count})
            for rule in parsed["rules"]:
                if rule["target"] in SHARED_CHAINS and rule["chain"] not in SHARED_CHAINS:
                    rules.append({"family": family, "table": rule["table"], "chain": rule["chain"], "line": rule["line"]})
        rules.extend(
            {"family": r["family"], "table": r["table"], "chain": r["chain"], "line": r["line"]}
            for r in classified
            if r["shared"]
        )
        return {"chains": chains, "rules": rules}

    # ---- teardown

    def teardown(self):
        """Remove everything this lab created and check that nothing of its network is left.

        Order: kill the lab's holder processes (by recorded pid). Run a
        correct DEL for every alloc that still has a cache file, then
        force-clean every alloc the lab or the system names. Delete the
        remaining rules, chains and veths of the network, this bridge's
        NOMAD-ADMIN rule and the bridge. Then release_shared_state() removes
        the shared chains, the empty nf_tables tables and the ip_forward
        change, but only where the baseline shows that a cnilab lab made
        them and no other CNI network uses them. Last, remove the IPAM and
        cache directories the lab created and its state file.

        Returns a report dict: allocs (IDs removed), errors (steps that
        failed but whose result the final check covers), kept (shared state
        left in place, with the reason) and ip_forward (baseline, found, and
        action: "unchanged", "restored" or "kept"). Raises LabError listing what
        is left of the network. Safe to call again; after a clean teardown
        it returns the same report.
        """
        if self._torn_down:
            return self._last_report
        report = {"allocs": [], "errors": [], "kept": []}
        with _HOST_LOCK:
            inv = self.inventory()
            ids = set(self._state["allocs"])
            for key in ("netns", "netns_unnamed", "veths", "reservations", "caches", "chains", "rules"):
                ids.update(item["alloc_id"] for item in inv[key] if item["alloc_id"])
            for alloc_id in sorted(ids):
                self.kill_holder(alloc_id)
            for alloc_id in sorted(ids):
                if self._read_cache(alloc_id) is not None:
                    try:
                        self.delete(alloc_id)
                    except LabError as exc:
                        report["errors"].append(f"DEL of {alloc_id}: {exc}")
                self.force_clean(alloc_id)
                report["allocs"].append(alloc_id)
            self._sweep_network(report)
            release_shared_state(self._state["baseline"] or shared_baseline(), report)
            self._remove_directories()
            leftovers = self._wait_for_leftovers()
            if leftovers:
                raise LabError(
                    f"teardown of network {self.network} left {len(leftovers)} item(s): "
                    + "; ".join(leftovers)
                    + f". Run: python3 cnilab.py teardown --force --network {self.network} "
                    f"--bridge {self.bridge} --subnet {self.subnet}"
                )
            self._state["allocs"] = {}
            if self.state_file and os.path.exists(self.state_file):
                os.unlink(self.state_file)
            with contextlib.suppress(OSError):
                os.rmdir(STATE_DIR)  # only when no other lab's state file or registry is in it
            self._torn_down = True
            self._last_report = report
            return report

    def _sweep_network(self, report):
        """Delete every remaining rule, chain, veth, reservation and cache file of this network, then the bridge."""
        inv = self.inventory()
        for unnamed in inv["netns_unnamed"]:
            report["errors"].append(
                f"namespace {unnamed['ns']} is held by pids {unnamed['pids']} the lab did not start; its veth is removed"
            )
        for veth in inv["veths"]:
            if IFACE_RE.match(veth["name"] or ""):
                _run(["ip", "link", "del", veth["name"]], check=False)
        for rule in inv["rules"]:
            if rule["role"] not in ("ipmasq", "hostport-dnat"):
                delete_rule(rule)
        for rule in inv["shared"]["rules"]:
            if rule["chain"] == ADMIN_CHAIN:
                delete_rule(parse_rule(rule["family"], rule["table"], rule["line"], 0))
        for chain in inv["chains"]:
            drop_chain(chain["family"], chain["table"], chain["name"])
        for item in inv["reservations"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item["path"])
        for item in inv["caches"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item["path"])
        if inv["bridge"] is not None:
            _run(["ip", "link", "del", self.bridge], check=False)

    def _remove_directories(self):
        baseline_dirs = set((self._state.get("baseline") or {}).get("ipam_network_dirs", []))
        for directory, _ in self._ipam_dirs():
            if not os.path.isdir(directory) or directory in baseline_dirs:
                continue
            names = os.listdir(directory)
            if all(n == "lock" or n.startswith("last_reserved_ip.") for n in names):
                for name in names:
                    os.unlink(os.path.join(directory, name))
                os.rmdir(directory)
        for directory in self._state["created_dirs"]:
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(directory)

    def _leftovers(self):
        inv = self.inventory()
        items = []
        if inv["bridge"] is not None:
            items.append(f"bridge {self.bridge}")
        for key in ("netns", "netns_unnamed", "veths", "reservations", "caches"):
            for entry in inv[key]:
                items.append(f"{key}: {entry.get('path') or entry.get('name') or entry.get('ns')}")
        for chain in inv["chains"]:
            items.append(f"chain {chain['family']} {chain['table']} {chain['name']}")
        for rule in inv["rules"] + [r for r in inv["shared"]["rules"] if r["chain"] == ADMIN_CHAIN]:
            items.append(f"{rule['family']} {rule['table']} rule: {rule['line']}")
        for alloc_id in self._state["allocs"]:
            pid = self._holder_alive(alloc_id)
            if pid is not None:
                items.append(f"holder process {pid} of alloc {alloc_id}")
        for directory in self._state["created_dirs"]:
            if os.path.exists(directory):
                items.append(f"directory {directory}: {sorted(os.listdir(directory))}")
        return items

    def _wait_for_leftovers(self):
        """Return leftovers, re-checking for a few seconds while the kernel finishes destroying namespaces."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            leftovers = self._leftovers()
            if not leftovers or time.monotonic() > deadline:
                return leftovers
            time.sleep(0.1)


# ----------------------------------------------------------------- shared state
#
# Shared chains, the nf_tables tables iptables-nft creates and ip_forward
# belong to no single lab. A lab treats them as its own only if they were
# absent at its baseline. Two concurrent labs would each see the other's
# chains as pre-existing, and neither would remove them. So every lab records
# in SHARED_REGISTRY what appeared after its baseline, and a later baseline
# counts registered objects as absent. The last teardown that finds them
# unused removes them and their registry entries. Programs other than cnilab do not
# use the registry: what they create before a lab's baseline counts as
# pre-existing and is never removed.


def _read_ip_forward():
    with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
        return f.read().strip()


def _present_shared():
    """Return ({family: {"table/chain"}}, {"table FAMILY NAME"}) for the shared objects present now."""
    chains = {}
    for family, parsed in read_iptables().items():
        chains[family] = {f"{t}/{c}" for t, c in parsed["chains"] if c in SHARED_CHAINS}
    tables = set()
    proc = _run(["nft", "list", "tables"], check=False)
    if proc.returncode == 0:
        listed = {line.strip() for line in proc.stdout.decode().splitlines()}
        tables = {f"table {family} {name}" for family, name in NFT_TABLES} & listed
    return chains, tables


def _read_registry():
    registry = {"chains": {family: [] for family, _, _ in FAMILIES}, "nft_tables": [], "ip_forward": None}
    with contextlib.suppress(FileNotFoundError):
        with open(SHARED_REGISTRY, encoding="utf-8") as f:
            try:
                registry.update(json.load(f))
            except ValueError as exc:
                raise LabError(f"invalid JSON in {SHARED_REGISTRY}: {exc}; delete the file and retry") from exc
    return registry


def _write_registry(registry):
    empty = not any(registry["chains"].values()) and not registry["nft_tables"] and registry["ip_forward"] is None
    if empty:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SHARED_REGISTRY)
        return
    os.makedirs(STATE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=STATE_DIR, prefix=".cnilab-registry-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(registry, f, indent=1, sort_keys=True)
    os.replace(tmp, SHARED_REGISTRY)


def shared_baseline():
    """Return which shared objects exist now and were not created by a cnilab lab, and ip_forward's original value."""
    registry = _read_registry()
    chains, tables = _present_shared()
    return {
        "shared_chains": {f: sorted(c - set(registry["chains"].get(f, []))) for f, c in chains.items()},
        "nft_tables": sorted(tables - set(registry["nft_tables"])),
        "ip_forward": registry["ip_forward"] if registry["ip_forward"] is not None else _read_ip_forward(),
    }


def register_shared_changes(baseline):
    """Record in SHARED_REGISTRY the shared objects present now that the baseline does not list."""
    registry = _read_registry()
    chains, tables = _present_shared()
    for family, present in chains.items():
        created = present - set(baseline["shared_chains"].get(family, []))
        registry["chains"][family] = sorted(set(registry["chains"].get(family, [])) | created)
    registry["nft_tables"] = sorted(set(registry["nft_tables"]) | (tables - set(baseline["nft_tables"])))
    if registry["ip_forward"] is None and _read_ip_forward() != baseline["ip_forward"]:
        registry["ip_forward"] = baseline["ip_forward"]
    _write_registry(registry)


def release_shared_state(baseline, report):
    """Remove the shared chains, empty nf_tables tables and ip_forward change absent from baseline, where unused.

    What stays because another network still uses it is appended to
    report["kept"] with the reason. Then entries for objects that no longer
    exist are dropped from SHARED_REGISTRY.
    """
    _remove_shared_chains(baseline, report)
    _remove_nft_tables(baseline, report)
    _restore_ip_forward(baseline, report)
    registry = _read_registry()
    chains, tables = _present_shared()
    for family in registry["chains"]:
        registry["chains"][family] = sorted(set(registry["chains"][family]) & chains.get(family, set()))
    registry["nft_tables"] = sorted(set(registry["nft_tables"]) & tables)
    if registry["ip_forward"] is not None and _read_ip_forward() == registry["ip_forward"]:
        registry["ip_forward"] = None
    _write_registry(registry)


def _remove_shared_chains(baseline, report):
    for family, _, _ in FAMILIES:
        parsed = read_iptables()[family]
        present = {c for _, c in parsed["chains"] if c in SHARED_CHAINS}
        existed = {entry.split("/", 1)[1] for entry in baseline["shared_chains"].get(family, [])}

        def rules_of(chain, parsed=parsed):
            return [r for r in parsed["rules"] if r["chain"] == chain]

        nat_group = [c for c in SHARED_NAT_CHAINS if c in present]
        if nat_group and not existed & set(SHARED_NAT_CHAINS):
            if rules_of("CNI-HOSTPORT-DNAT"):
                report["kept"].append(f"{family} nat {', '.join(nat_group)}: CNI-HOSTPORT-DNAT has other networks' rules")
            else:
                _remove_chain_group(family, "nat", parsed, nat_group)

        forward_busy = any(r["target"] != ADMIN_CHAIN for r in rules_of("CNI-FORWARD"))
        admin_busy = bool(rules_of(ADMIN_CHAIN))
        if "CNI-FORWARD" in present and "CNI-FORWARD" not in existed:
            if forward_busy or admin_busy:
                report["kept"].append(f"{family} filter CNI-FORWARD: other networks' rules remain")
                continue
            _remove_chain_group(family, "filter", parsed, ["CNI-FORWARD"])
        if ADMIN_CHAIN in present and ADMIN_CHAIN not in existed:
            if admin_busy:
                report["kept"].append(f"{family} filter {ADMIN_CHAIN}: other bridges' rules remain")
            elif "CNI-FORWARD" in existed:
                report["kept"].append(f"{family} filter {ADMIN_CHAIN}: the pre-existing CNI-FORWARD jumps to it")
            else:
                drop_chain(family, "filter", ADMIN_CHAIN)


def _remove_chain_group(family, table, parsed, group):
    """Delete the jumps into the group's chains, then flush and delete the chains."""
    for rule in parsed["rules"]:
        if rule["table"] == table and rule["target"] in group and rule["chain"] not in group:
            delete_rule(rule)
    for chain in group:
        drop_chain(family, table, chain)


def _remove_nft_tables(baseline, report):
    existed = set(baseline["nft_tables"])
    for family, name in NFT_TABLES:
        if f"table {family} {name}" in existed:
            continue
        proc = _run(["nft", "-j", "list", "table", family, name], check=False)
        if proc.returncode != 0:
            continue
        try:
            objects = json.loads(proc.stdout).get("nftables", [])
        except ValueError:
            continue
        busy = [o for o in objects if "rule" in o or ("chain" in o and "hook" not in o["chain"])]
        if busy:
            report["kept"].append(f"nft table {family} {name}: other programs' rules or chains remain")
            continue
        # NOTE: a program could add a rule between the check above and this
        # delete, because nft 1.0 has no "delete only if empty" for tables.
        _run(["nft", "delete", "table", family, name], check=False)


def _restore_ip_forward(baseline, report):
    wanted = baseline["ip_forward"]
    current = _read_ip_forward()
    report["ip_forward"] = {"baseline": wanted, "found": current, "action": "unchanged"}
    if current == wanted:
        return
    parsed = read_iptables()["ipv4"]
    others = [
        r["line"]
        for r in parsed["rules"]
        if (r["chain"] == "CNI-FORWARD" and (r["src"] or r["dst"]))
        or (r["chain"] == "POSTROUTING" and MASQ_CHAIN_RE.match(r["target"] or ""))
        or r["chain"] == "CNI-HOSTPORT-DNAT"
    ]
    if others:
        report["kept"].append(
            f"net.ipv4.ip_forward kept at {current} (baseline {wanted}): other CNI networks are active ({others[0]})"
        )
        report["ip_forward"]["action"] = "kept"
        return
    with open("/proc/sys/net/ipv4/ip_forward", "w", encoding="ascii") as f:
        f.write(wanted + "\n")
    report["ip_forward"]["action"] = "restored"


# ----------------------------------------------------------------- small helpers


def default_state_file(network):
    """Return the state file path a lab of this network uses when no state_file is given."""
    return os.path.join(STATE_DIR, f"{network}.json")


def _state_file_exists_message(state_file):
    owner = None
    with contextlib.suppress(OSError, ValueError):
        with open(state_file, encoding="utf-8") as f:
            owner = json.load(f).get("owner_pid")
    alive = owner is not None and _process_start_time(owner) is not None
    who = f"process {owner} (still running)" if alive else f"process {owner} (no longer running)"
    return (
        f"state file {state_file} exists: a lab of this network was created by {who}. "
        f"If that run is over, remove its state with: python3 cnilab.py teardown --state-file {state_file}"
    )


def _require_root():
    if os.geteuid() != 0:
        raise LabError(
            "cnilab needs root: it creates network namespaces, veths, a bridge and iptables rules; "
            "run it as root (e.g. with sudo)"
        )


def _validate_names(network, bridge):
    if not isinstance(network, str) or not NETWORK_RE.match(network):
        raise LabError(f"invalid network name {network!r}: use 1-64 letters, digits, '_', '.', '-'")
    if not isinstance(bridge, str) or not IFACE_RE.match(bridge):
        raise LabError(f"invalid bridge name {bridge!r}: use 1-15 letters, digits, '_', '.', '-'")


def _validate_subnet(subnet):
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise LabError(f"invalid subnet {subnet!r}: {exc}; use an IPv4 network such as 172.26.80.0/24") from exc
    if net.version != 4 or net.prefixlen > 29:
        raise LabError(f"invalid subnet {subnet!r}: use an IPv4 network of /29 or larger")
    return net


def _validate_alloc_id(alloc_id):
    if not isinstance(alloc_id, str) or not ALLOC_ID_RE.match(alloc_id):
        raise LabError(
            f"invalid alloc ID {alloc_id!r}: use a UUID like Nomad's (letters, digits, '_', '.', '-', at most 128)"
        )


def _normalise_ports(ports):
    result = []
    for item in ports or ():
        if isinstance(item, int) and not isinstance(item, bool):
            pair = (item, item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            pair = tuple(item)
        else:
            raise LabError(f"invalid port {item!r}: use (host_port, container_port) or an int")
        for value in pair:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise LabError(f"invalid port {item!r}: ports are integers from 1 to 65535")
        result.append(pair)
    hosts = [h for h, _ in result]
    if len(set(hosts)) != len(hosts):
        raise LabError(f"duplicate host port in {list(ports)}: each host port maps once per alloc")
    return result


def _check_plugins(cni_path):
    for plugin in REQUIRED_PLUGINS:
        if not any(os.access(os.path.join(d, plugin), os.X_OK) for d in cni_path.split(":")):
            raise LabError(
                f"CNI plugin {plugin!r} not found in {cni_path}: apt-get install containernetworking-plugins, "
                "or pass cni_path"
            )


def _host_veth_from_result(result, bridge):
    for interface in result.get("interfaces", []) or []:
        if not interface.get("sandbox") and interface.get("name") and interface.get("name") != bridge:
            return interface["name"]
    return None


def _dnat_target(rules, chain, proto, port):
    for rule in rules:
        if rule["chain"] == chain and rule["target"] == "DNAT" and port in rule["ports"]:
            if proto is None or rule["proto"] == proto:
                return rule["to_destination"]
    return None


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _list_reservations(directory):
    """Yield (ip, content) for host-local reservation files in directory."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if _is_ip(name):
            content = _read_text(os.path.join(directory, name))
            if content is not None:
                yield name, content


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _read_text(path):
    data = _read_bytes(path)
    return None if data is None else data.decode(errors="replace")


def _file_mode(path):
    try:
        return oct(os.lstat(path).st_mode & 0o7777)
    except OSError:
        return None


# ----------------------------------------------------------------- command line


def _parse_port_spec(spec):
    ports = []
    for item in spec.split(","):
        host, _, container = item.partition(":")
        if not host.isdigit() or (container and not container.isdigit()):
            raise LabError(f"invalid port {item!r}: use HOSTPORT or HOSTPORT:CONTAINERPORT")
        ports.append((int(host), int(container or host)))
    return ports


def _cli_lab(args, create):
    state_file = args.state_file or default_state_file(args.network)
    if os.path.exists(state_file):
        return Lab.load(state_file)
    if not create:
        raise LabError(f"no lab state file {state_file}: run `add` first, or `teardown --force` to clean up by name")
    return Lab(
        network=args.network,
        bridge=args.bridge,
        subnet=args.subnet,
        ipam_dir=args.ipam_dir,
        cache_dir=args.cache_dir,
        cni_path=args.cni_path,
        legacy_ipam=args.legacy_ipam,
        legacy_ipam_dir=args.legacy_ipam_dir,
        state_file=state_file,
        register_atexit=False,
    )


def _print_json(value):
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _cli_teardown(args):
    state_file = args.state_file or default_state_file(args.network)
    if os.path.exists(state_file):
        lab = Lab.load(state_file)
    elif args.force:
        lab = Lab.recover(
            args.network,
            args.bridge,
            args.subnet,
            ipam_dirs=[d for d in (args.ipam_dir, args.legacy_ipam_dir) if d],
            cache_dir=args.cache_dir,
            cni_path=args.cni_path,
        )
    else:
        raise LabError(
            f"no lab state file {state_file}: nothing recorded for network {args.network}. "
            "Add --force to remove the network's leftovers found on the host"
        )
    return lab.teardown()


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--network", default="nmtest", help="CNI network name (default: %(default)s)")
    common.add_argument("--bridge", default="nmtest0", help="bridge interface name (default: %(default)s)")
    common.add_argument("--subnet", default="172.26.80.0/24", help="IPv4 subnet of the bridge (default: %(default)s)")
    common.add_argument("--state-file", help="lab state file (default: /run/nomad-medic-cnilab/NETWORK.json)")
    common.add_argument("--cni-path", default="/usr/lib/cni", help="CNI plugin directory (default: %(default)s)")
    common.add_argument("--ipam-dir", help="host-local dataDir (default: a new temporary directory)")
    common.add_argument("--legacy-ipam-dir", help="directory standing for /var/lib/cni/networks (default: temporary)")
    common.add_argument("--cache-dir", help="libcni results directory (default: a new temporary directory)")
    common.add_argument("--legacy-ipam", action="store_true", help="reserve IPs in the legacy directory (Nomad <= 1.9.3)")

    parser = argparse.ArgumentParser(
        description="Create and leak real CNI state of Nomad bridge-mode allocations (needs root).",
        epilog="Example: cnilab.py add --network nmtest3 --bridge nmtest3 --subnet 172.26.83.0/24 "
        "--ports 28301:8080 --mode netns $(uuidgen)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add = sub.add_parser("add", parents=[common], help="create an allocation and leak it")
    add.add_argument("alloc_id")
    add.add_argument("--ports", default="", help="HOSTPORT[:CONTAINERPORT][,...] (one tcp and one udp mapping each)")
    add.add_argument("--mode", choices=LEAK_MODES, default="record", help="leak mode (default: %(default)s)")
    add.add_argument("--hold", action="store_true", help="record mode: keep a process in the named namespace")

    leak = sub.add_parser("leak", parents=[common], help="change a record-mode allocation to another leak mode")
    leak.add_argument("alloc_id")
    leak.add_argument("--mode", choices=LEAK_MODES[1:], required=True)

    delete = sub.add_parser("delete", parents=[common], help="CNI DEL one allocation in the reference order")
    delete.add_argument("alloc_id")

    inventory = sub.add_parser("inventory", parents=[common], help="print what exists for the network (JSON)")
    inventory.add_argument("--alloc", help="only this allocation")

    dnat = sub.add_parser("effective-dnat", parents=[common], help="print the DNAT jump that wins for a host port")
    dnat.add_argument("port", type=int)
    dnat.add_argument("--proto", choices=("tcp", "udp"), default="tcp")

    sub.add_parser("paths", parents=[common], help="print the paths nomad-medic must use for this lab")
    sub.add_parser(
        "release-shared",
        help="remove shared chains, nf_tables tables and the ip_forward change that cnilab labs created, if unused",
    )

    teardown = sub.add_parser("teardown", parents=[common], help="remove everything of the lab")
    teardown.add_argument(
        "--force", action="store_true", help="without a state file: remove the network's leftovers found on the host"
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        _require_root()
        if args.command == "add":
            lab = _cli_lab(args, create=True)
            ports = _parse_port_spec(args.ports) if args.ports else []
            _print_json(lab.add(args.alloc_id, ports=ports, leak_mode=args.mode, hold=args.hold))
        elif args.command == "leak":
            _print_json(_cli_lab(args, create=False).leak(args.alloc_id, args.mode))
        elif args.command == "delete":
            left = _cli_lab(args, create=False).delete(args.alloc_id)
            _print_json({"alloc_id": args.alloc_id, "left": left})
            return 1 if left else 0
        elif args.command == "inventory":
            _print_json(_cli_lab(args, create=False).inventory(args.alloc))
        elif args.command == "effective-dnat":
            _print_json(_cli_lab(args, create=False).effective_dnat(args.port, args.proto))
        elif args.command == "paths":
            _print_json(_cli_lab(args, create=False).product_paths())
        elif args.command == "teardown":
            _print_json(_cli_teardown(args))
        elif args.command == "release-shared":
            report = {"kept": []}
            with _HOST_LOCK:
                release_shared_state(shared_baseline(), report)
            _print_json(report)
    except LabError as exc:
        print(f"cnilab: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
