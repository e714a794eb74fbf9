"""The systemd units in deploy/systemd/, checked with systemd-analyze verify.

systemd-analyze verify fails when ExecStart= names a file that does not
exist, and /usr/bin/nomad-medic exists only once the package is installed.
Each test therefore verifies a temporary copy of the unit whose ExecStart=
points at the built binary (NOMAD_MEDIC_BIN) instead; every other line is
verified as shipped. verify exits 0 after many problems that systemd only
"ignores" (an unknown key, an invalid value), so any diagnostic it prints
counts as a failure here.
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import deploylib as d

SHIPPED_BINARY = "/usr/bin/nomad-medic"

# Options that give a service a mount namespace of its own. The node scope
# unmounts /var/run/netns/<alloc ID> on the host, which a private mount
# namespace would hide, so none of them may appear in the node unit.
MOUNT_NAMESPACE_OPTIONS = [
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "ReadWritePaths",
    "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectProc", "ProcSubset", "DynamicUser", "MountFlags", "RootDirectory", "RootImage",
]

NODE_CAPABILITIES = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE",
                     "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN"}


def unit_settings(path):
    """{section: {key: [values in order]}} of a unit file (comments and blank lines skipped)."""
    sections = {}
    current = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


class SystemdUnitTest(unittest.TestCase):
    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            self.fail("systemd-analyze not found; install the systemd package (scripts/install-deps.sh does)")
        try:
            self.binary = os.path.abspath(d.medic_binary())
        except d.SetupError as e:
            self.fail(str(e))
        self.tmp = tempfile.mkdtemp(prefix="nomad-medic-units-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def copy_for_verify(self, unit_path, text=None):
        """Write the unit under its own name into the temp dir, with ExecStart= on the built binary."""
        if text is None:
            with open(unit_path, encoding="utf-8") as f:
                text = f.read()
        prefix = "ExecStart=%s " % SHIPPED_BINARY
        lines = text.splitlines(True)
        starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        self.assertEqual(len(starts), 1, "%s: expected one line starting with %r" % (unit_path, prefix))
        lines[starts[0]] = lines[starts[0]].replace(SHIPPED_BINARY, self.binary, 1)
        copy = os.path.join(self.tmp, os.path.basename(unit_path))
        with open(copy, "w", encoding="utf-8") as f:
            f.write("".join(lines))
        return copy

    def verify(self, path):
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                              capture_output=True, text=True, timeout=120)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def assert_verifies(self, unit_path):
        rc, output = self.verify(self.copy_for_verify(unit_path))
        self.assertEqual((rc, output), (0, ""),
                         "systemd-analyze verify %s reported problems:\n%s" % (unit_path, output))

    def test_cluster_unit_verifies(self):
        self.assert_verifies(d.UNITS["cluster"])

    def test_node_unit_verifies(self):
        self.assert_verifies(d.UNITS["node"])

    def test_verify_reports_invalid_value(self):
        with open(d.UNITS["node"], encoding="utf-8") as f:
            text = f.read().replace("Restart=on-failure", "Restart=sometimes", 1)
        rc, output = self.verify(self.copy_for_verify(d.UNITS["node"], text))
        self.assertIn("sometimes", output)

    def test_verify_reports_unknown_key(self):
        with open(d.UNITS["cluster"], encoding="utf-8") as f:
            text = f.read().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes", 1)
        rc, output = self.verify(self.copy_for_verify(d.UNITS["cluster"], text))
        self.assertIn("NoNewPrivilege", output)

    def test_verify_reports_missing_binary(self):
        with open(d.UNITS["cluster"], encoding="utf-8") as f:
            text = f.read()
        copy = os.path.join(self.tmp, "nomad-medic-cluster.service")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("ExecStart=%s " % SHIPPED_BINARY, "ExecStart=%s/missing " % self.tmp, 1))
        rc, output = self.verify(copy)
        self.assertNotEqual(rc, 0)
        self.assertIn("missing", output)

    def test_units_run_shipped_binary(self):
        expected = {
            "cluster": ["run", "--config", "/etc/nomad-medic/nomad-medic.conf"],
            "node": ["run", "--scope", "node", "--config", "/etc/nomad-medic/node.conf"],
        }
        for scope, path in d.UNITS.items():
            with self.subTest(scope=scope):
                service = unit_settings(path)["Service"]
                argv = service["ExecStart"][0].split()
                self.assertEqual(argv[0], SHIPPED_BINARY)
                self.assertEqual(argv[1:], expected[scope])

    def test_units_common_settings(self):
        state = {"cluster": "nomad-medic", "node": "nomad-medic-node"}
        environment = {"cluster": "-/etc/default/nomad-medic", "node": "-/etc/default/nomad-medic-node"}
        for scope, path in d.UNITS.items():
            with self.subTest(scope=scope):
                service = unit_settings(path)["Service"]
                self.assertEqual(service["Type"], ["simple"])
                self.assertEqual(service["Restart"], ["on-failure"])
                self.assertEqual(service["EnvironmentFile"], [environment[scope]])
                self.assertEqual(service["StateDirectory"], [state[scope]])
                self.assertEqual(service["NoNewPrivileges"], ["yes"])
                self.assertEqual(unit_settings(path)["Install"]["WantedBy"], ["multi-user.target"])

    def test_state_directory_holds_default_journal(self):
        # The cluster unit runs on the built-in defaults for the journal and pause file.
        defaults = d.defaults()
        service = unit_settings(d.UNITS["cluster"])["Service"]
        state_dir = "/var/lib/" + service["StateDirectory"][0]
        self.assertEqual(os.path.dirname(defaults["journal"]["path"]), state_dir)
        self.assertEqual(os.path.dirname(defaults["controller"]["pause_file"]), state_dir)
        self.assertEqual(service["ReadWritePaths"], [state_dir])

    def test_node_state_directory_matches_node_example(self):
        example = d.read_libconfig(d.EXAMPLE_CONFIGS["node"])
        service = unit_settings(d.UNITS["node"])["Service"]
        state_dir = "/var/lib/" + service["StateDirectory"][0]
        self.assertEqual(os.path.dirname(example["journal"]["path"]), state_dir)
        self.assertEqual(os.path.dirname(example["controller"]["pause_file"]), state_dir)

    def test_cluster_unit_hardening(self):
        service = unit_settings(d.UNITS["cluster"])["Service"]
        expected = {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                    "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictNamespaces": "yes",
                    "MemoryDenyWriteExecute": "yes"}
        for key, value in expected.items():
            with self.subTest(key=key):
                self.assertEqual(service.get(key), [value])

    def test_node_unit_shares_host_mount_namespace(self):
        service = unit_settings(d.UNITS["node"])["Service"]
        for option in MOUNT_NAMESPACE_OPTIONS:
            with self.subTest(option=option):
                self.assertNotIn(option, service)

    def test_node_unit_capabilities(self):
        service = unit_settings(d.UNITS["node"])["Service"]
        self.assertEqual(len(service["CapabilityBoundingSet"]), 1)
        self.assertEqual(set(service["CapabilityBoundingSet"][0].split()), NODE_CAPABILITIES)
        self.assertNotIn("User", service)


if __name__ == "__main__":
    unittest.main()
