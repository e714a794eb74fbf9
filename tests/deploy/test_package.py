"""The Debian package: `cpack -G DEB` in the build directory, inspected with dpkg-deb.

Needs NM_BUILD_DIR, a configured and built CMake build directory. The package
is written to a temporary directory (cpack -B), never into the build tree.
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import deploylib as d

REQUIRED_FILES = [
    "/usr/bin/nomad-medic",
    "/usr/lib/systemd/system/nomad-medic-cluster.service",
    "/usr/lib/systemd/system/nomad-medic-node.service",
    "/usr/share/nomad-medic/acl/nomad-medic-cluster.policy.hcl",
    "/usr/share/nomad-medic/acl/nomad-medic-node.policy.hcl",
    "/usr/share/nomad-medic/nomad/nomad-medic-cluster.nomad.hcl",
    "/usr/share/nomad-medic/nomad/nomad-medic-cluster.nomad.json",
    "/usr/share/nomad-medic/nomad/nomad-medic-node.nomad.hcl",
    "/usr/share/nomad-medic/nomad/nomad-medic-node.nomad.json",
    "/usr/share/nomad-medic/nomad-medic.conf.example",
    "/usr/share/nomad-medic/nomad-medic-node.conf.example",
    "/usr/share/nomad-medic/policies/default.conf",
    "/usr/share/doc/nomad-medic/README.md",
    "/usr/share/doc/nomad-medic/deploy.md",
]

# Runtime packages of the libraries nomad-medic links on Debian 12.
REQUIRED_DEPENDS = ["libcurl4", "libcjson1", "libconfig9", "libsqlite3-0", "libarchive13", "libssl3"]
REQUIRED_RECOMMENDS = ["containernetworking-plugins", "iptables"]


def listing_paths(listing):
    """Paths from `dpkg-deb -c` output ("./usr/bin/x" becomes "/usr/bin/x"), mapped to their mode string."""
    paths = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 6:
            paths[fields[5][1:].rstrip("/") or "/"] = fields[0]
    return paths


def missing_files(paths, required):
    return [p for p in required if p not in paths]


def package_names(field):
    """Package names of a Depends-style field, without versions or alternatives' details."""
    names = []
    for clause in field.split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ")[0].split(":")[0]
            if name:
                names.append(name)
    return names


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


class DebianPackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.setup_error = None
        cls.tmp = tempfile.mkdtemp(prefix="nomad-medic-deb-")
        try:
            cls.build_package()
        except AssertionError as e:
            cls.setup_error = str(e)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def build_package(cls):
        build = os.environ.get("NM_BUILD_DIR")
        if not build:
            raise AssertionError("NM_BUILD_DIR is not set; point it at a configured and built CMake build directory")

        config = os.path.join(build, "CPackConfig.cmake")
        if not os.path.isfile(config):
            raise AssertionError("%s is missing; configure the build directory with cmake first" % config)
        for program in ("cpack", "dpkg-deb", "dpkg", "ldd", "readelf"):
            if shutil.which(program) is None:
                raise AssertionError("%s not found; install cmake, dpkg-dev and binutils (scripts/install-deps.sh does)"
                                     % program)

        proc = run(["cpack", "-G", "DEB", "--config", config, "-B", cls.tmp])
        if proc.returncode != 0:
            raise AssertionError("cpack -G DEB failed (exit %d):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr))
        debs = glob.glob(os.path.join(cls.tmp, "*.deb"))
        if len(debs) != 1:
            raise AssertionError("cpack -G DEB wrote %d .deb files in %s, expected 1:\n%s"
                                 % (len(debs), cls.tmp, proc.stdout))
        cls.deb = debs[0]

        listing = run(["dpkg-deb", "-c", cls.deb])
        if listing.returncode != 0:
            raise AssertionError("dpkg-deb -c %s failed:\n%s" % (cls.deb, listing.stderr))
        cls.paths = listing_paths(listing.stdout)

        cls.fields = {}
        for field in ("Package", "Version", "Architecture", "Maintainer", "Description", "Depends",
                      "Recommends", "Section"):
            proc = run(["dpkg-deb", "-f", cls.deb, field])
            cls.fields[field] = proc.stdout.strip()

        cls.root = os.path.join(cls.tmp, "root")
        proc = run(["dpkg-deb", "-x", cls.deb, cls.root])
        if proc.returncode != 0:
            raise AssertionError("dpkg-deb -x %s failed:\n%s" % (cls.deb, proc.stderr))

    def setUp(self):
        if self.setup_error:
            self.fail(self.setup_error)

    def test_file_name(self):
        name = os.path.basename(self.deb)
        self.assertRegex(name, r"^nomad-medic_[0-9][^_]*_[a-z0-9]+\.deb$")

    def test_control_fields(self):
        self.assertEqual(self.fields["Package"], "nomad-medic")
        self.assertRegex(self.fields["Maintainer"], r"^[^<>]+ <[^<>@\s]+@[^<>\s]+>$")
        self.assertTrue(self.fields["Description"].startswith("remediation controller for HashiCorp Nomad"))
        self.assertEqual(self.fields["Section"], "admin")

    def test_depends_on_runtime_libraries(self):
        names = package_names(self.fields["Depends"])
        for package in REQUIRED_DEPENDS:
            with self.subTest(package=package):
                self.assertIn(package, names)

    def test_recommends_cni_plugins_and_iptables(self):
        names = package_names(self.fields["Recommends"])
        for package in REQUIRED_RECOMMENDS:
            with self.subTest(package=package):
                self.assertIn(package, names)

    def test_depends_covers_every_linked_library(self):
        binary = os.path.join(self.root, "usr", "bin", "nomad-medic")
        dynamic = run(["readelf", "-d", binary])
        self.assertEqual(dynamic.returncode, 0, "readelf -d %s failed:\n%s" % (binary, dynamic.stderr))
        # Only the libraries the binary names itself (DT_NEEDED); their own
        # dependencies are their packages' business.
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout)
        self.assertGreater(len(needed), 0, "readelf -d %s lists no NEEDED library" % binary)
        resolved = run(["ldd", binary])
        self.assertEqual(resolved.returncode, 0, "ldd %s failed:\n%s" % (binary, resolved.stderr))
        paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", resolved.stdout, re.MULTILINE))
        depends = set(package_names(self.fields["Depends"]))
        for soname in needed:
            with self.subTest(library=soname):
                self.assertIn(soname, paths, "ldd did not resolve %s" % soname)
                owner = self.owning_package(paths[soname])
                self.assertIsNotNone(owner, "dpkg -S found no package owning %s" % paths[soname])
                self.assertIn(owner, depends, "%s comes from %s, which Depends does not name" % (soname, owner))

    @staticmethod
    def owning_package(path):
        real = os.path.realpath(path)
        candidates = [path, real]
        for p in (path, real):
            # Debian 12 merges /lib into /usr/lib; dpkg may know either spelling.
            candidates.append(p[len("/usr"):] if p.startswith("/usr/") else "/usr" + p)
        for candidate in candidates:
            proc = run(["dpkg", "-S", candidate])
            if proc.returncode == 0:
                return proc.stdout.split(":")[0].strip()
        return None

    def test_contains_required_files(self):
        self.assertEqual(missing_files(self.paths, REQUIRED_FILES), [])

    def test_binary_is_executable(self):
        self.assertEqual(self.paths["/usr/bin/nomad-medic"], "-rwxr-xr-x")

    def test_installed_files_equal_sources(self):
        sources = {
            "/usr/lib/systemd/system/nomad-medic-cluster.service": d.UNITS["cluster"],
            "/usr/lib/systemd/system/nomad-medic-node.service": d.UNITS["node"],
            "/usr/share/nomad-medic/acl/nomad-medic-node.policy.hcl": d.ACL_POLICIES["node"],
            "/usr/share/nomad-medic/nomad-medic.conf.example": d.EXAMPLE_CONFIGS["cluster"],
            "/usr/share/doc/nomad-medic/deploy.md": os.path.join(d.DEPLOY, "README.md"),
        }
        for installed, source in sources.items():
            with self.subTest(file=installed):
                with open(os.path.join(self.root, installed.lstrip("/")), "rb") as f:
                    packaged = f.read()
                with open(source, "rb") as f:
                    self.assertEqual(packaged, f.read())

    def test_units_documentation_is_packaged(self):
        for scope, unit in d.UNITS.items():
            with self.subTest(unit=os.path.basename(unit)):
                with open(unit, encoding="utf-8") as f:
                    docs = re.findall(r"^Documentation=file://(\S+)$", f.read(), re.MULTILINE)
                self.assertEqual(len(docs), 1)
                self.assertIn(docs[0], self.paths)

    def test_units_name_packaged_examples(self):
        for scope, unit in d.UNITS.items():
            with self.subTest(unit=os.path.basename(unit)):
                with open(unit, encoding="utf-8") as f:
                    examples = re.findall(r"(/usr/share/nomad-medic/\S+\.example)", f.read())
                self.assertGreaterEqual(len(examples), 1)
                for example in examples:
                    self.assertIn(example, self.paths)

    def test_nothing_installed_under_etc(self):
        self.assertEqual([p for p in self.paths if p.startswith("/etc")], [])

    def test_missing_file_is_reported(self):
        paths = dict(self.paths)
        del paths["/usr/bin/nomad-medic"]
        self.assertEqual(missing_files(paths, REQUIRED_FILES), ["/usr/bin/nomad-medic"])


if __name__ == "__main__":
    unittest.main()
