"""Self-test of cnilab: it makes the state a Nomad client leaks, exactly, and removes all of it.

Needs root: every test creates real namespaces, veths, a bridge and iptables
rules with the CNI plugins. Run as a user other than root, every test fails
with a message that it needs root.

The checks read the host with their own commands (ip, iptables-save,
/proc/self/mountinfo) instead of trusting cnilab's inventory, except where
the inventory itself is under test.

Names come from the environment so that parallel runs do not collide:
NM_CNILAB_NETWORK, NM_CNILAB_BRIDGE (both default nmtest3), NM_CNILAB_SUBNET
(default 172.26.83.0/24), NM_CNILAB_NETWORK2 and NM_CNILAB_BRIDGE2 (a second
lab on the upper half of the subnet; default: the first names plus "x") and
NM_CNILAB_PORT_BASE (default 28300; the tests use the next ten ports, which
DNAT on every local address while a test runs).
"""

import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cnilab  # noqa: E402 - needs the path above

NETWORK = os.environ.get("NM_CNILAB_NETWORK", "nmtest3")
BRIDGE = os.environ.get("NM_CNILAB_BRIDGE", "nmtest3")
SUBNET = os.environ.get("NM_CNILAB_SUBNET", "172.26.83.0/24")
PORT_BASE = int(os.environ.get("NM_CNILAB_PORT_BASE", "28300"))
# A second lab for the concurrency test; it uses the upper half of SUBNET.
SECOND_NETWORK = os.environ.get("NM_CNILAB_NETWORK2", NETWORK + "x")
SECOND_BRIDGE = os.environ.get("NM_CNILAB_BRIDGE2", BRIDGE + "x")
GATEWAY = str(next(ipaddress.ip_network(SUBNET).hosts()))

NEED_ROOT = (
    "test_cnilab needs root: it creates network namespaces, veths, a bridge and iptables rules "
    "with the CNI plugins. Run it as root, e.g. `sudo python3 -m unittest -v test_cnilab`."
)


# ----------------------------------------------------------------- reading the host directly


def run(*argv, check=True):
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip_json(*args):
    text = run("ip", "-j", *args).strip()
    return json.loads(text) if text else []


def mount_fstype(path):
    """Return the fstype mounted exactly at path (per /proc/self/mountinfo), or None."""
    target = os.path.realpath(path)
    fstype = None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == target:
                fstype = right.split()[0]
    return fstype


def iptables_lines(table, family="ipv4"):
    tool = "iptables-save" if family == "ipv4" else "ip6tables-save"
    return [line for line in run(tool, "-t", table, check=False).splitlines() if line.startswith("-A ")]


def bridge_ports():
    return {link["ifname"] for link in ip_json("link", "show", "master", BRIDGE)} if link_exists(BRIDGE) else set()


def link_exists(name):
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False).returncode == 0


def expected_masq_chain(alloc_id):
    return "CNI-" + hashlib.sha512((NETWORK + alloc_id).encode()).hexdigest()[:24]


def expected_dnat_chain(alloc_id):
    return "CNI-DN-" + hashlib.sha512((NETWORK + alloc_id).encode()).hexdigest()[:21]


def comment_of(alloc_id, dnat=False):
    """The comment as iptables-save prints it (quoted, inner quotes escaped)."""
    prefix = "dnat " if dnat else ""
    return f'--comment "{prefix}name: \\"{NETWORK}\\" id: \\"{alloc_id}\\""'


_CONFLIST_TEMPLATE = """{
    "cniVersion": "0.4.0",
    "name": "@NETWORK@",
    "plugins": [
        {
            "type": "loopback"
        },
        {
            "type": "bridge",
            "bridge": "@BRIDGE@",
            "ipMasq": true,
            "isGateway": true,
            "forceAddress": true,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [
                        {
                            "subnet": "@SUBNET@"
                        }
                    ]
                ],
                "routes": [
                    {
                        "dst": "0.0.0.0/0"
                    }
                ],
                "dataDir": "@DATADIR@"
            }
        },
        {
            "type": "firewall",
            "backend": "iptables",
            "iptablesAdminChainName": "NOMAD-ADMIN"
        },
        {
            "type": "portmap",
            "capabilities": {
                "portMappings": true
            },
            "snat": true
        }
    ]
}"""


def expected_conflist(data_dir, subnet=SUBNET):
    """Nomad's conflist as Go's json.MarshalIndent(.., "", "\\t") prints it: tab indents, no trailing newline."""
    text = _CONFLIST_TEMPLATE.replace("@NETWORK@", NETWORK).replace("@BRIDGE@", BRIDGE)
    text = text.replace("@SUBNET@", subnet).replace("@DATADIR@", data_dir)
    lines = [re.sub(r"^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), line) for line in text.split("\n")]
    return "\n".join(lines).encode()


def leak_table_row(lab, info):
    """One row of the leaked-artefacts table, read from the host: which artefacts exist now."""
    alloc_id, ip = info["alloc_id"], info["ip"]
    nat = iptables_lines("nat")
    filt = iptables_lines("filter")
    path = info["netns"]
    if mount_fstype(path) == "nsfs":
        netns = "nsfs"
    elif os.path.isfile(path):
        netns = "file"
    else:
        netns = "absent" if not os.path.lexists(path) else "other"
    return {
        "netns": netns,
        "veth": info["veth"] in bridge_ports(),
        "ipam": os.path.isfile(os.path.join(lab.ipam_data_dir, NETWORK, ip)),
        "cache": os.path.isfile(lab.cache_path(alloc_id)),
        "masq": any(line.startswith(f"-A {expected_masq_chain(alloc_id)} ") for line in nat),
        "dnat": any(line.startswith(f"-A {expected_dnat_chain(alloc_id)} ") for line in nat),
        "forward": sum(1 for line in filt if line.startswith("-A CNI-FORWARD ") and f" {ip}/32 " in line) == 2,
    }


def process_alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ----------------------------------------------------------------- base classes


class LabTestCase(unittest.TestCase):
    """Each test gets its own labs; their teardown runs as a cleanup, so leftovers fail the test."""

    def setUp(self):
        if os.geteuid() != 0:
            self.fail(NEED_ROOT)

    def make_lab(self, **overrides):
        params = {"network": NETWORK, "bridge": BRIDGE, "subnet": SUBNET}
        params.update(overrides)
        lab = cnilab.Lab(**params)
        self.addCleanup(lab.teardown)
        return lab

    def port(self, offset):
        return PORT_BASE + offset

    def assert_ip_forward_restored(self, report):
        # Compared with the lab's own baseline and read right after teardown,
        # because another program's lab may switch ip_forward during the test.
        forward = report["ip_forward"]
        if forward["action"] == "kept":
            self.assertIn("other CNI networks are active", " | ".join(report["kept"]))
        else:
            with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
                self.assertEqual(f.read().strip(), forward["baseline"])


class RecordAllocTest(LabTestCase):
    """One alloc in "record" mode with two ports, and each of its artefacts checked on the host."""

    @classmethod
    def setUpClass(cls):
        cls.lab = None
        if os.geteuid() != 0:
            return  # setUp fails every test with NEED_ROOT
        cls.lab = cnilab.Lab(network=NETWORK, bridge=BRIDGE, subnet=SUBNET)
        cls.addClassCleanup(cls.lab.teardown)
        cls.alloc_id = cnilab.new_alloc_id()
        cls.ports = [(PORT_BASE + 1, 8080), (PORT_BASE + 2, 9090)]
        cls.info = cls.lab.add(cls.alloc_id, ports=cls.ports)

    def test_add_returns_description(self):
        self.assertEqual(self.info["alloc_id"], self.alloc_id)
        self.assertIn(ipaddress.ip_address(self.info["ip"]), ipaddress.ip_network(SUBNET))
        self.assertEqual(self.info["netns"], f"/var/run/netns/{self.alloc_id}")
        self.assertEqual(self.info["cache"], os.path.join(self.lab.cache_dir, f"{NETWORK}-{self.alloc_id}-eth0"))
        self.assertEqual(self.info["ports"], self.ports)
        self.assertRegex(self.info["veth"], r"^veth[0-9a-f]{8}$")

    def test_netns_is_nsfs_bind_mount(self):
        self.assertEqual(mount_fstype(self.info["netns"]), "nsfs")
        self.assertIn(self.alloc_id, run("ip", "netns", "list").split())

    def test_veth_on_bridge_peers_into_netns(self):
        link = ip_json("-d", "link", "show", "dev", self.info["veth"])[0]
        self.assertEqual(link["master"], BRIDGE)
        self.assertEqual(link["linkinfo"]["info_kind"], "veth")
        names = {entry["nsid"]: entry.get("name") for entry in ip_json("netns", "list-id")}
        self.assertEqual(names.get(link["link_netnsid"]), self.alloc_id)

    def test_inside_netns_eth0_route_and_lo(self):
        links = {link["ifname"]: link for link in ip_json("-n", self.alloc_id, "addr", "show")}
        addresses = [f"{a['local']}/{a['prefixlen']}" for a in links["eth0"]["addr_info"] if a["family"] == "inet"]
        self.assertEqual(addresses, [f"{self.info['ip']}/{ipaddress.ip_network(SUBNET).prefixlen}"])
        self.assertIn("UP", links["lo"]["flags"])
        routes = ip_json("-n", self.alloc_id, "route", "show", "default")
        self.assertEqual([r.get("gateway") for r in routes], [GATEWAY])

    def test_bridge_has_gateway_address(self):
        addresses = ip_json("addr", "show", "dev", BRIDGE)[0]["addr_info"]
        self.assertIn(GATEWAY, [a["local"] for a in addresses if a["family"] == "inet"])

    def test_reservation_file_content_and_mode(self):
        path = os.path.join(self.lab.ipam_dir, NETWORK, self.info["ip"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.alloc_id.encode() + b"\r\neth0")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)

    def test_cache_file_fields(self):
        with open(self.info["cache"], "rb") as f:
            raw = f.read()
        data = json.loads(raw)

        self.assertEqual(
            list(data),
            ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs", "capabilityArgs", "result"],
        )
        self.assertNotIn(b"\n", raw)
        self.assertEqual(data["kind"], "cniCacheV1")
        self.assertEqual(data["containerId"], self.alloc_id)
        self.assertEqual(base64.b64decode(data["config"]), expected_conflist(self.lab.ipam_dir))
        self.assertEqual(data["ifName"], "eth0")
        self.assertEqual(data["networkName"], NETWORK)
        self.assertEqual(data["netns"], f"/var/run/netns/{self.alloc_id}")

        self.assertEqual(
            data["cniArgs"],
            [
                ["IgnoreUnknown", "true"],
                ["NOMAD_REGION", "global"],
                ["NOMAD_NAMESPACE", "default"],
                ["NOMAD_JOB_ID", "cnilab"],
                ["NOMAD_GROUP_NAME", "lab"],
                ["NOMAD_ALLOC_ID", self.alloc_id],
            ],
        )

        expected_mappings = []
        for host, container in self.ports:
            for proto in ("tcp", "udp"):
                expected_mappings.append({"HostPort": host, "ContainerPort": container, "Protocol": proto, "HostIP": ""})
        self.assertEqual(data["capabilityArgs"], {"portMappings": expected_mappings})
        self.assertEqual(list(data["capabilityArgs"]["portMappings"][0]), ["HostPort", "ContainerPort", "Protocol", "HostIP"])

        result = data["result"]
        self.assertEqual(list(result), sorted(result))
        self.assertEqual(result["cniVersion"], "0.4.0")
        self.assertEqual([ip["address"] for ip in result["ips"]], [self.info["ip_cidr"]])
        self.assertEqual([ip["gateway"] for ip in result["ips"]], [GATEWAY])
        self.assertEqual(
            [(i["name"], i.get("sandbox")) for i in result["interfaces"]],
            [(BRIDGE, None), (self.info["veth"], None), ("eth0", self.info["netns"])],
        )

    def test_cache_file_and_dir_modes(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.info["cache"]).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.lab.cache_dir).st_mode), 0o700)

    def test_masq_chain_and_postrouting_jump(self):
        chain = expected_masq_chain(self.alloc_id)
        nat = iptables_lines("nat")
        self.assertIn(f"-A POSTROUTING -s {self.info['ip']}/32 -m comment {comment_of(self.alloc_id)} -j {chain}", nat)
        self.assertEqual(
            [line for line in nat if line.startswith(f"-A {chain} ")],
            [
                f"-A {chain} -d {SUBNET} -m comment {comment_of(self.alloc_id)} -j ACCEPT",
                f"-A {chain} ! -d 224.0.0.0/4 -m comment {comment_of(self.alloc_id)} -j MASQUERADE",
            ],
        )

    def test_dnat_chain_and_hostport_jumps(self):
        chain = expected_dnat_chain(self.alloc_id)
        self.assertEqual(len(chain), 28)
        nat = iptables_lines("nat")
        ports = ",".join(str(h) for h, _ in self.ports)
        for proto in ("tcp", "udp"):
            with self.subTest(proto=proto):
                jump = f"-A CNI-HOSTPORT-DNAT -p {proto} -m comment {comment_of(self.alloc_id, dnat=True)} -m multiport --dports {ports} -j {chain}"
                self.assertIn(jump, nat)
        for host, container in self.ports:
            for proto in ("tcp", "udp"):
                with self.subTest(port=host, proto=proto):
                    self.assertIn(
                        f"-A {chain} -p {proto} -m {proto} --dport {host} -j DNAT --to-destination {self.info['ip']}:{container}",
                        nat,
                    )
                    self.assertIn(f"-A {chain} -s 127.0.0.1/32 -p {proto} -m {proto} --dport {host} -j CNI-HOSTPORT-SETMARK", nat)
                    self.assertIn(f"-A {chain} -s {SUBNET} -p {proto} -m {proto} --dport {host} -j CNI-HOSTPORT-SETMARK", nat)

    def test_forward_rules(self):
        filt = iptables_lines("filter")
        ip = self.info["ip"]
        self.assertIn(f"-A CNI-FORWARD -d {ip}/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", filt)
        self.assertIn(f"-A CNI-FORWARD -s {ip}/32 -j ACCEPT", filt)

    def test_admin_chain_rule_and_jump(self):
        filt = iptables_lines("filter")
        self.assertIn(f"-A NOMAD-ADMIN -d {SUBNET} -o {BRIDGE} -j ACCEPT", filt)
        self.assertIn('-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j NOMAD-ADMIN', filt)

    def test_inventory_lists_each_artefact_once(self):
        inv = self.lab.inventory(self.alloc_id)
        for key in ("netns", "veths", "reservations", "caches"):
            with self.subTest(kind=key):
                self.assertEqual(len(inv[key]), 1)
        self.assertEqual(sorted(c["role"] for c in inv["chains"]), ["bridge-ipmasq", "portmap-dnat"])
        roles = sorted(r["role"] for r in inv["rules"])
        # 2 masq rules; per mapping (2 ports x tcp/udp) 3 DNAT-chain rules; 2 jumps; 1 POSTROUTING jump; 2 FORWARD.
        expected = ["forward-accept"] * 2 + ["hostport-dnat"] * 12 + ["hostport-jump"] * 2 + ["ipmasq"] * 2 + ["ipmasq-jump"]
        self.assertEqual(roles, expected)
        self.assertEqual(inv["conflicts"], [])

    def test_artefacts_is_stable(self):
        self.assertEqual(self.lab.artefacts(self.alloc_id), self.lab.artefacts(self.alloc_id))
        self.assertNotEqual(self.lab.artefacts(self.alloc_id), [])

    def test_product_paths(self):
        paths = self.lab.product_paths()
        self.assertEqual(paths["netns_dir"], "/var/run/netns")
        self.assertEqual(paths["cni_cache_dir"], self.lab.cache_dir)
        self.assertEqual(paths["ipam_dir"], self.lab.ipam_dir)
        self.assertEqual(paths["ipam_dir_legacy"], self.lab.legacy_ipam_dir)
        self.assertEqual(paths["network_name"], NETWORK)
        self.assertEqual(paths["bridge_name"], BRIDGE)


# The leak-mode table of tests/node/README.md: which artefacts stay after ADD without DEL.
LEAK_TABLE = {
    "record": {"netns": "nsfs", "veth": True, "ipam": True, "cache": True, "masq": True, "dnat": True, "forward": True},
    "netns": {"netns": "absent", "veth": False, "ipam": True, "cache": True, "masq": True, "dnat": True, "forward": True},
    "stale-file": {"netns": "file", "veth": False, "ipam": True, "cache": True, "masq": True, "dnat": True, "forward": True},
    "held": {"netns": "absent", "veth": True, "ipam": True, "cache": True, "masq": True, "dnat": True, "forward": True},
}


class LeakModeTest(LabTestCase):
    def assert_row(self, lab, info, mode):
        row = leak_table_row(lab, info)
        for column, expected in LEAK_TABLE[mode].items():
            with self.subTest(mode=mode, artefact=column):
                self.assertEqual(row[column], expected)

    def test_record_mode_row(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)])
        self.assert_row(lab, info, "record")

    def test_netns_mode_row(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)], leak_mode="netns")
        self.assert_row(lab, info, "netns")
        inv = lab.inventory(info["alloc_id"])
        self.assertEqual(inv["netns"], [])
        self.assertEqual(inv["veths"], [])

    def test_stale_file_mode_row(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)], leak_mode="stale-file")
        self.assert_row(lab, info, "stale-file")
        st = os.lstat(info["netns"])
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(st.st_size, 0)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o644)
        self.assertEqual([n["kind"] for n in lab.inventory(info["alloc_id"])["netns"]], ["file"])

    def test_held_mode_row_and_holder(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)], leak_mode="held")
        self.assert_row(lab, info, "held")
        pid = info["holder_pid"]
        self.assertTrue(process_alive(pid))
        self.assertNotEqual(os.readlink(f"/proc/{pid}/ns/net"), os.readlink("/proc/self/ns/net"))
        link = ip_json("-d", "link", "show", "dev", info["veth"])[0]
        named = {entry["nsid"] for entry in ip_json("netns", "list-id") if entry.get("name")}
        self.assertNotIn(link["link_netnsid"], named)
        unnamed = lab.inventory(info["alloc_id"])["netns_unnamed"]
        self.assertEqual([u["pids"] for u in unnamed], [[pid]])
        self.assertEqual([u["ips"] for u in unnamed], [[info["ip"]]])
        self.assertEqual([u["veth"] for u in unnamed], [info["veth"]])
        lab.teardown()
        self.assertFalse(process_alive(pid))

    def test_record_mode_with_holder(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)], leak_mode="record", hold=True)
        self.assert_row(lab, info, "record")
        inode = os.stat(info["netns"]).st_ino
        self.assertEqual(os.readlink(f"/proc/{info['holder_pid']}/ns/net"), f"net:[{inode}]")
        self.assertEqual([n["holders"] for n in lab.inventory(info["alloc_id"])["netns"]], [[info["holder_pid"]]])

    def test_leak_record_to_netns(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(3)])
        info = lab.leak(info["alloc_id"], "netns")
        self.assertEqual(info["leak_mode"], "netns")
        self.assert_row(lab, info, "netns")

    def test_invalid_leak_mode_is_rejected(self):
        lab = self.make_lab()
        with self.assertRaisesRegex(cnilab.LabError, "invalid leak_mode 'crash'"):
            lab.add(cnilab.new_alloc_id(), leak_mode="crash")
        self.assertEqual(lab.alloc_ids(), [])


class PortConflictTest(LabTestCase):
    def setUp(self):
        super().setUp()
        self.lab = self.make_lab()
        self.port_number = self.port(4)
        self.first = self.lab.add(cnilab.new_alloc_id(), ports=[(self.port_number, 8080)])
        self.second = self.lab.add(cnilab.new_alloc_id(), ports=[(self.port_number, 8080)])

    def test_first_rule_wins(self):
        conflicts = self.lab.inventory()["conflicts"]
        self.assertEqual(sorted((c["proto"], c["port"]) for c in conflicts), [("tcp", self.port_number), ("udp", self.port_number)])
        for conflict in conflicts:
            with self.subTest(proto=conflict["proto"]):
                self.assertEqual(conflict["effective"]["alloc_id"], self.first["alloc_id"])
                self.assertEqual([s["alloc_id"] for s in conflict["shadowed"]], [self.second["alloc_id"]])
                self.assertEqual(conflict["effective"]["dnat_to"], f"{self.first['ip']}:8080")
                self.assertTrue(conflict["effective"]["netns_mounted"])

    def test_effective_dnat_is_first_then_second(self):
        for proto in ("tcp", "udp"):
            with self.subTest(proto=proto):
                winner = self.lab.effective_dnat(self.port_number, proto)
                self.assertEqual(winner["alloc_id"], self.first["alloc_id"])
                self.assertEqual(winner["chain"], expected_dnat_chain(self.first["alloc_id"]))
                self.assertEqual(winner["dnat_to"], f"{self.first['ip']}:8080")
        self.assertEqual(self.lab.delete(self.first["alloc_id"]), [])
        self.assertEqual(self.lab.effective_dnat(self.port_number)["alloc_id"], self.second["alloc_id"])
        self.assertEqual(self.lab.inventory()["conflicts"], [])

    def test_conflict_reports_dead_netns(self):
        self.lab.leak(self.first["alloc_id"], "netns")
        effective = self.lab.inventory()["conflicts"][0]["effective"]
        self.assertEqual(effective["alloc_id"], self.first["alloc_id"])
        self.assertFalse(effective["netns_mounted"])

    def test_loopback_reaches_effective_alloc(self):
        # Traffic goes only to 127.0.0.1, DNAT'd by this lab's rules into this lab's namespaces.
        server = subprocess.Popen(
            [
                "ip", "netns", "exec", self.second["alloc_id"], sys.executable, "-c",
                "import socket, sys\n"
                "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                "s.bind(('0.0.0.0', 8080)); s.listen(4); print('ready', flush=True)\n"
                "while True:\n"
                "    c, _ = s.accept(); c.sendall(b'second'); c.close()\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(server.stdout.close)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        self.assertEqual(server.stdout.readline().strip(), "ready")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.port_number), timeout=5).close()
        self.assertEqual(self.lab.delete(self.first["alloc_id"]), [])
        with socket.create_connection(("127.0.0.1", self.port_number), timeout=5) as conn:
            self.assertEqual(conn.recv(16), b"second")


class DeleteTest(LabTestCase):
    def test_delete_leaves_nothing_and_keeps_other(self):
        lab = self.make_lab()
        gone = lab.add(cnilab.new_alloc_id(), ports=[self.port(5)])
        kept = lab.add(cnilab.new_alloc_id(), ports=[self.port(6)])
        kept_before = lab.artefacts(kept["alloc_id"])
        self.assertEqual(lab.delete(gone["alloc_id"]), [])
        self.assertEqual(lab.artefacts(gone["alloc_id"]), [])
        self.assertEqual(lab.artefacts(kept["alloc_id"]), kept_before)
        self.assertFalse(os.path.lexists(gone["netns"]))
        self.assertFalse(os.path.exists(gone["cache"]))
        self.assertFalse(os.path.exists(gone["reservation"]))
        self.assertNotIn(gone["veth"], bridge_ports())
        lines = iptables_lines("nat") + iptables_lines("filter")
        for needle in (gone["alloc_id"], expected_masq_chain(gone["alloc_id"]), expected_dnat_chain(gone["alloc_id"]), f"{gone['ip']}/32"):
            with self.subTest(needle=needle):
                self.assertEqual([line for line in lines if needle in line], [])

    def test_delete_without_netns_leaks_masq(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), ports=[self.port(5)], leak_mode="netns")
        left = lab.delete(info["alloc_id"])
        chain = expected_masq_chain(info["alloc_id"])
        self.assertEqual(
            left,
            sorted(
                [
                    f"chain ipv4 nat {chain}",
                    f"rule ipv4 nat -A POSTROUTING -s {info['ip']}/32 -m comment {comment_of(info['alloc_id'])} -j {chain}",
                    f"rule ipv4 nat -A {chain} -d {SUBNET} -m comment {comment_of(info['alloc_id'])} -j ACCEPT",
                    f"rule ipv4 nat -A {chain} ! -d 224.0.0.0/4 -m comment {comment_of(info['alloc_id'])} -j MASQUERADE",
                ]
            ),
        )
        self.assertEqual(lab.force_clean(info["alloc_id"]), [])

    def test_delete_unlinks_stale_file_first(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id(), leak_mode="stale-file")
        left = lab.delete(info["alloc_id"])
        self.assertFalse(os.path.lexists(info["netns"]))
        self.assertFalse(os.path.exists(info["reservation"]))
        self.assertEqual(sorted({item.split()[0] for item in left}), ["chain", "rule"])

    def test_delete_without_cache_raises(self):
        lab = self.make_lab()
        info = lab.add(cnilab.new_alloc_id())
        os.unlink(info["cache"])
        with self.assertRaisesRegex(cnilab.LabError, "no readable cache file"):
            lab.delete(info["alloc_id"])


class LayoutTest(LabTestCase):
    def test_legacy_layout_reservation(self):
        lab = self.make_lab(legacy_ipam=True)
        info = lab.add(cnilab.new_alloc_id())
        legacy_file = os.path.join(lab.legacy_ipam_dir, NETWORK, info["ip"])
        with open(legacy_file, "rb") as f:
            self.assertEqual(f.read(), info["alloc_id"].encode() + b"\r\neth0")
        self.assertFalse(os.path.exists(os.path.join(lab.ipam_dir, NETWORK, info["ip"])))
        self.assertEqual(info["reservation"], legacy_file)
        with open(info["cache"], encoding="utf-8") as f:
            config = base64.b64decode(json.load(f)["config"])
        self.assertEqual(config, expected_conflist(lab.legacy_ipam_dir))
        self.assertEqual(lab.product_paths()["ipam_dir_legacy"], lab.legacy_ipam_dir)
        self.assertEqual([r["legacy"] for r in lab.inventory(info["alloc_id"])["reservations"]], [True])

    def test_failed_add_is_rolled_back(self):
        # A /29 leaves .2-.6 for allocations (.1 is the gateway), so the sixth ADD fails in host-local.
        subnet = str(next(ipaddress.ip_network(SUBNET).subnets(new_prefix=29)))
        lab = self.make_lab(subnet=subnet)
        for _ in range(5):
            lab.add(cnilab.new_alloc_id())
        failing = cnilab.new_alloc_id()
        with self.assertRaisesRegex(cnilab.LabError, "no IP addresses available"):
            lab.add(failing)
        self.assertEqual(lab.artefacts(failing), [])
        self.assertFalse(os.path.lexists(f"/var/run/netns/{failing}"))
        self.assertNotIn(failing, lab.alloc_ids())
        self.assertEqual(len(lab.alloc_ids()), 5)


class TeardownTest(LabTestCase):
    def snapshot(self):
        with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
            ip_forward = f.read().strip()
        return {
            "links": run("ip", "-o", "link", "show").splitlines(),
            "netns": run("ip", "netns", "list").splitlines(),
            "iptables": [
                line
                for tool in ("iptables-save", "ip6tables-save")
                for line in run(tool, check=False).splitlines()
                if not line.startswith("#")
            ],
            "ip_forward": ip_forward,
            "nft_tables": run("nft", "list", "tables").splitlines(),
        }

    def test_teardown_restores_host(self):
        before = self.snapshot()
        lab = self.make_lab()
        infos = [
            lab.add(cnilab.new_alloc_id(), ports=[self.port(7)]),
            lab.add(cnilab.new_alloc_id(), ports=[self.port(7)], hold=True),
            lab.add(cnilab.new_alloc_id(), ports=[self.port(8)], leak_mode="netns"),
            lab.add(cnilab.new_alloc_id(), leak_mode="stale-file"),
            lab.add(cnilab.new_alloc_id(), ports=[self.port(9)], leak_mode="held"),
        ]
        state_file = lab.state_file
        dirs = [lab.ipam_dir, lab.legacy_ipam_dir, lab.cache_dir]
        self.assertTrue(os.path.exists(state_file))
        report = lab.teardown()
        after = self.snapshot()

        ids = [i["alloc_id"] for i in infos]
        veths = [i["veth"] for i in infos]
        chains = [expected_masq_chain(a) for a in ids] + [expected_dnat_chain(a) for a in ids]
        subnet_prefix = SUBNET.rsplit(".", 1)[0] + "."

        def ours_link(line):
            return f": {BRIDGE}:" in line or f"master {BRIDGE} " in line or any(f": {v}@" in line for v in veths)

        def ours_rule(line):
            return any(n in line for n in [f'\\"{NETWORK}\\"', subnet_prefix, f"-o {BRIDGE} "] + chains)

        self.assertEqual([l for l in after["links"] if ours_link(l)], [l for l in before["links"] if ours_link(l)])
        self.assertEqual(
            [n for n in after["netns"] if n.split()[0] in ids], [n for n in before["netns"] if n.split()[0] in ids]
        )
        self.assertEqual([l for l in after["iptables"] if ours_rule(l)], [l for l in before["iptables"] if ours_rule(l)])

        # Shared state that appeared during the test is gone, unless teardown
        # reported that another network (never this one) still uses it.
        kept = " | ".join(report["kept"])
        self.assertNotIn(f'\\"{NETWORK}\\"', kept)
        self.assertNotIn(subnet_prefix, kept)
        for chain in cnilab.SHARED_CHAINS:
            if any(f":{chain} " in line for line in before["iptables"]):
                continue
            with self.subTest(shared_chain=chain):
                if any(f":{chain} " in line for line in after["iptables"]):
                    self.assertIn(chain, kept)
        for table in set(after["nft_tables"]) - set(before["nft_tables"]):
            with self.subTest(table=table):
                self.assertIn(f"nft {table}", kept)
        self.assert_ip_forward_restored(report)
        for info in infos:
            if info["holder_pid"]:
                with self.subTest(holder=info["holder_pid"]):
                    self.assertFalse(process_alive(info["holder_pid"]))
        for directory in dirs:
            with self.subTest(directory=directory):
                self.assertFalse(os.path.exists(directory))
        self.assertFalse(os.path.exists(state_file))
        self.assertEqual(lab.teardown(), report)

    def test_second_lab_same_network_rejected(self):
        lab = self.make_lab()
        with self.assertRaisesRegex(cnilab.LabError, "state file .* exists"):
            cnilab.Lab(network=NETWORK, bridge=BRIDGE, subnet=SUBNET)
        self.assertTrue(os.path.exists(lab.state_file))

    def test_cli_teardown_after_process_exit(self):
        work = tempfile.mkdtemp(prefix="cnilab-cli-test-")
        self.addCleanup(shutil.rmtree, work, True)
        state_file = os.path.join(work, "state.json")
        cli = [sys.executable, os.path.join(HERE, "cnilab.py")]
        names = ["--network", NETWORK, "--bridge", BRIDGE, "--subnet", SUBNET, "--state-file", state_file]
        alloc_id = cnilab.new_alloc_id()
        added = subprocess.run(cli + ["add"] + names + ["--ports", f"{self.port(0)}:8080", "--mode", "held", alloc_id],
                               capture_output=True, text=True, timeout=60, check=False)
        self.addCleanup(subprocess.run, cli + ["teardown"] + names, capture_output=True, check=False)
        self.assertEqual(added.returncode, 0, added.stderr)
        pid = json.loads(added.stdout)["holder_pid"]
        self.assertTrue(process_alive(pid))
        inventory = subprocess.run(cli + ["inventory"] + names + ["--alloc", alloc_id],
                                   capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(inventory.returncode, 0, inventory.stderr)
        self.assertEqual([u["pids"] for u in json.loads(inventory.stdout)["netns_unnamed"]], [[pid]])
        torn = subprocess.run(cli + ["teardown"] + names, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(torn.returncode, 0, torn.stderr)
        self.assertFalse(process_alive(pid))
        self.assertFalse(os.path.exists(state_file))
        self.assertFalse(link_exists(BRIDGE))


class ConcurrentLabsTest(LabTestCase):
    """Two labs at once (each on half of SUBNET): the shared chains go away with the last one."""

    def test_last_lab_removes_shared_state(self):
        before = run("iptables-save", check=False)
        low, high = (str(n) for n in ipaddress.ip_network(SUBNET).subnets(prefixlen_diff=1))
        first = self.make_lab(subnet=low)
        second = self.make_lab(network=SECOND_NETWORK, bridge=SECOND_BRIDGE, subnet=high)
        first.add(cnilab.new_alloc_id(), ports=[self.port(0)])
        other = second.add(cnilab.new_alloc_id(), ports=[self.port(1)])
        other_before = second.artefacts(other["alloc_id"])

        first_report = first.teardown()
        self.assertEqual(second.artefacts(other["alloc_id"]), other_before)
        self.assertTrue(link_exists(SECOND_BRIDGE))
        if ":CNI-HOSTPORT-DNAT " not in before:
            # Only checkable when this test's labs created the chains.
            self.assertIn("CNI-HOSTPORT-DNAT has other networks' rules", " | ".join(first_report["kept"]))

        second_report = second.teardown()
        after = run("iptables-save", check=False)
        kept = " | ".join(second_report["kept"])
        for chain in cnilab.SHARED_CHAINS:
            if f":{chain} " in before:
                continue
            with self.subTest(chain=chain):
                if f":{chain} " in after:
                    self.assertIn(chain, kept)
        self.assert_ip_forward_restored(second_report)
        if not second_report["kept"]:
            self.assertFalse(os.path.exists(cnilab.SHARED_REGISTRY))


class RootGuardTest(unittest.TestCase):
    """Run as an unprivileged user, the harness and its tests fail with a "needs root" message."""

    def setUp(self):
        if os.geteuid() != 0:
            self.fail(NEED_ROOT)
        if shutil.which("setpriv") is None:
            self.fail("setpriv (util-linux) is missing: it is needed to run the non-root check")

    def run_unprivileged(self, *argv):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, *argv],
            cwd=HERE, env=env, capture_output=True, text=True, timeout=60, check=False,
        )

    def test_unprivileged_test_run_fails(self):
        proc = self.run_unprivileged("-m", "unittest", "test_cnilab.LeakModeTest.test_record_mode_row")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("test_cnilab needs root", proc.stderr)
        self.assertIn("FAILED (failures=1)", proc.stderr)

    def test_unprivileged_cli_fails(self):
        proc = self.run_unprivileged(os.path.join(HERE, "cnilab.py"), "inventory", "--network", NETWORK)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("cnilab needs root", proc.stderr)


if __name__ == "__main__":
    unittest.main()
