"""Shared helpers for the deployment tests (Python standard library only).

Environment, set by ctest (tests/CMakeLists.txt) or by hand:
  NM_DEPLOY_TOOLS   directory holding hcldec, hclfmt and render_template,
                    built by tests/deploy/build-tools.sh
  NOMAD_MEDIC_BIN   the built nomad-medic binary
  NM_BUILD_DIR      the CMake build directory (for cpack)

Run as a program, it regenerates the JSON twins of the Nomad jobs:
  NM_DEPLOY_TOOLS=DIR python3 tests/deploy/deploylib.py --write-json
"""

import difflib
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
DEFAULT_CONF = os.path.join(REPO, "policies", "default.conf")
CAPTURE = os.path.join(REPO, "examples", "capture-two-namespaces")

JOB_SPEC = os.path.join(HERE, "nomad-job.hcldec")
ACL_SPEC = os.path.join(HERE, "acl-policy.hcldec")

JOBS = {
    "cluster": os.path.join(DEPLOY, "nomad", "nomad-medic-cluster.nomad.hcl"),
    "node": os.path.join(DEPLOY, "nomad", "nomad-medic-node.nomad.hcl"),
}
ACL_POLICIES = {
    "cluster": os.path.join(DEPLOY, "acl", "nomad-medic-cluster.policy.hcl"),
    "node": os.path.join(DEPLOY, "acl", "nomad-medic-node.policy.hcl"),
}
UNITS = {
    "cluster": os.path.join(DEPLOY, "systemd", "nomad-medic-cluster.service"),
    "node": os.path.join(DEPLOY, "systemd", "nomad-medic-node.service"),
}
EXAMPLE_CONFIGS = {
    "cluster": os.path.join(DEPLOY, "config", "nomad-medic.conf.example"),
    "node": os.path.join(DEPLOY, "config", "nomad-medic-node.conf.example"),
}


def json_twin(hcl_path):
    """Path of the JSON form of a job file: x.nomad.hcl -> x.nomad.json."""
    return hcl_path[: -len(".hcl")] + ".json"


# Nomad interpolates these in job files at run time, on the client. Nomad's
# own HCL parser leaves ${NOMAD_...} references for the client; hcldec needs
# a value for every variable, so each maps to its own reference text and the
# decoded strings read exactly as Nomad stores them.
RUNTIME_VARIABLES = ["NOMAD_SECRETS_DIR", "NOMAD_TASK_DIR", "NOMAD_ALLOC_DIR"]

# The task environment the tests render templates with. Addresses are
# loopback, so a configuration that opened a listener would bind locally.
TEMPLATE_ENV = {
    "NOMAD_ADDR_http": "127.0.0.1:25123",
    "NOMAD_ALLOC_DIR": "/alloc",
    "NOMAD_TASK_DIR": "/local",
    "NOMAD_SECRETS_DIR": "/secrets",
}


class SetupError(Exception):
    """A tool or input the tests need is missing; the message names how to provide it."""


# ---------------------------------------------------------------------------
# Tools


def tool(name):
    """Path of a tool built by build-tools.sh, or SetupError naming the fix."""
    tools = os.environ.get("NM_DEPLOY_TOOLS")
    if not tools:
        raise SetupError("NM_DEPLOY_TOOLS is not set; run tests/deploy/build-tools.sh DIR "
                         "and set NM_DEPLOY_TOOLS=DIR (ctest does both)")
    path = os.path.join(tools, name)
    if not os.access(path, os.X_OK):
        raise SetupError("%s is missing or not executable; run tests/deploy/build-tools.sh %s"
                         % (path, tools))
    return path


def medic_binary():
    path = os.environ.get("NOMAD_MEDIC_BIN")
    if not path:
        raise SetupError("NOMAD_MEDIC_BIN is not set; point it at the built nomad-medic")
    if not os.access(path, os.X_OK):
        raise SetupError("NOMAD_MEDIC_BIN=%s is not an executable file; build the nomad-medic target"
                         % path)
    return path


def run(argv, stdin=None, timeout=120):
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def hcldec(spec, path, variables=None):
    """Decode path with hcldec and spec; return the JSON value, or raise ValueError with hcldec's diagnostics."""
    argv = [tool("hcldec"), "--spec", spec]
    if variables is not None:
        argv += ["--vars", json.dumps(variables)]
    proc = run(argv + [path])
    if proc.returncode != 0:
        raise ValueError("hcldec --spec %s %s failed (exit %d):\n%s"
                         % (os.path.relpath(spec, REPO), path, proc.returncode, proc.stderr))
    return json.loads(proc.stdout)


def decode_job(path):
    return hcldec(JOB_SPEC, path, {name: "${%s}" % name for name in RUNTIME_VARIABLES})


def decode_acl(path):
    return hcldec(ACL_SPEC, path)


def hclfmt_problems(path):
    """Return a list of problems: HCL syntax errors, or a diff against hclfmt's layout. Empty when clean."""
    problems = []
    check = run([tool("hclfmt"), "-check", path])
    if check.returncode != 0:
        problems.append("hclfmt -check %s failed (exit %d):\n%s" % (path, check.returncode, check.stderr))
        return problems
    with open(path, encoding="utf-8") as f:
        original = f.read()
    formatted = run([tool("hclfmt"), path])
    if formatted.returncode != 0:
        problems.append("hclfmt %s failed (exit %d):\n%s" % (path, formatted.returncode, formatted.stderr))
    elif formatted.stdout != original:
        diff = "".join(difflib.unified_diff(original.splitlines(True), formatted.stdout.splitlines(True),
                                            path, path + " (hclfmt)"))
        problems.append("%s is not in hclfmt's layout; run `hclfmt -w %s`:\n%s" % (path, path, diff))
    return problems


def render_template(data, env=None):
    """Render a job template's data as Nomad would, with render_template and TEMPLATE_ENV."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(TEMPLATE_ENV if env is None else env, f)
        env_path = f.name
    try:
        proc = run([tool("render_template"), env_path], stdin=data)
    finally:
        os.unlink(env_path)
    if proc.returncode != 0:
        raise ValueError("rendering the template failed (exit %d):\n%s" % (proc.returncode, proc.stderr))
    return proc.stdout


def load_config_with_binary(config_path, workdir):
    """Run `nomad-medic plan --json` offline with config_path, which makes the binary load and check it.

    The plan reads the shipped capture, so nothing is sent anywhere. Returns the
    CompletedProcess. A configuration the binary accepts yields a JSON plan on
    stdout, whatever the exit status (a capture older than the binary makes the
    observation incomplete, and plan then exits 1). A rejected one prints no
    plan, exits 1 and names "FILE:LINE: problem" on stderr.
    """
    argv = [medic_binary(), "plan", "--json", "--from-capture", CAPTURE, "--config", config_path,
            "--db", os.path.join(workdir, "journal.db")]
    return run(argv, timeout=120)


# ---------------------------------------------------------------------------
# libconfig (the configuration format), read with the standard library.

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<float>[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+[eE][-+]?\d+)
  | (?P<hex>0[xX][0-9A-Fa-f]+L{0,2})
  | (?P<int>[-+]?\d+L{0,2})
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*]*)
  | (?P<punct>[=:;,{}\[\]()])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "f": "\f"}


def _unquote(text):
    out = []
    i = 1
    while i < len(text) - 1:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1]
            if nxt == "x":
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(text):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError("line %d: unexpected text %r" % (line, text[pos:pos + 20]))
        pos = m.end()
        kind = m.lastgroup
        if kind in ("space", "comment"):
            continue
        yield kind, m.group(), text.count("\n", 0, m.start()) + 1


class _Parser:
    def __init__(self, text):
        self.tokens = list(_tokens(text))
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", 0)

    def take(self, *values):
        kind, value, line = self.peek()
        if values and value not in values:
            raise ValueError("line %d: expected %s, found %r" % (line, " or ".join(values), value))
        self.i += 1
        return kind, value, line

    def settings(self, closing):
        group = {}
        while self.peek()[1] != closing and self.peek()[0] != "end":
            kind, name, line = self.take()
            if kind != "name":
                raise ValueError("line %d: expected a setting name, found %r" % (line, name))
            if name in group:
                raise ValueError("line %d: duplicate setting %r" % (line, name))
            self.take("=", ":")
            group[name] = self.value()
            if self.peek()[1] in (";", ","):
                self.take()
        return group

    def value(self):
        kind, value, line = self.take()
        if value == "{":
            group = self.settings("}")
            self.take("}")
            return group
        if value in ("[", "("):
            closing = "]" if value == "[" else ")"
            items = []
            while self.peek()[1] != closing:
                items.append(self.value())
                if self.peek()[1] == ",":
                    self.take()
            self.take(closing)
            return items
        if kind == "string":
            parts = [_unquote(value)]
            while self.peek()[0] == "string":
                parts.append(_unquote(self.take()[1]))
            return "".join(parts)
        if kind == "int":
            return int(value.rstrip("L"))
        if kind == "hex":
            return int(value.rstrip("L"), 16)
        if kind == "float":
            return float(value)
        if kind == "name" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("line %d: expected a value, found %r" % (line, value))


def parse_libconfig(text):
    """Parse libconfig text into dicts (groups) and lists (arrays, lists). @include is not supported."""
    parser = _Parser(text)
    result = parser.settings(None)
    if parser.peek()[0] != "end":
        raise ValueError("line %d: unexpected %r" % (parser.peek()[2], parser.peek()[1]))
    return result


def read_libconfig(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse_libconfig(text)
    except ValueError as e:
        raise ValueError("%s: %s" % (path, e)) from None


def setting_paths(group, prefix=""):
    """Dotted names of every scalar, array or list setting below group."""
    names = []
    for name, value in group.items():
        full = prefix + name
        if isinstance(value, dict):
            names.extend(setting_paths(value, full + "."))
        else:
            names.append(full)
    return names


def defaults():
    """policies/default.conf, which contains the same values as the binary's built-in policy."""
    return read_libconfig(DEFAULT_CONF)


def documented_default_address():
    """The nomad.address default that default.conf documents in its commented-out line."""
    with open(DEFAULT_CONF, encoding="utf-8") as f:
        m = re.search(r'^\s*#\s*address\s*=\s*"([^"]+)";', f.read(), re.MULTILINE)
    if m is None:
        raise ValueError("%s: no commented-out `address = \"...\";` line documents the default" % DEFAULT_CONF)
    return m.group(1)


# ---------------------------------------------------------------------------
# Nomad job: hcldec output -> the JSON that POST /v1/jobs accepts.

_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def go_duration_ns(text):
    """Nanoseconds of a Go duration string ("30s", "1h30m", "250ms"), as Nomad's JSON carries durations."""
    if text == "0":
        return 0
    pos, total = 0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError("invalid Go duration %r" % text)
        total += round(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
        pos = m.end()
    if pos == 0:
        raise ValueError("invalid Go duration %r" % text)
    return total


def _convert(block, table, where):
    """Map the keys of one decoded block through table {hcl_name: (api_name, conversion)}."""
    out = {}
    for name, value in block.items():
        if value == [] or value == {}:
            # hcldec reports an absent repeatable block as an empty list or map;
            # Nomad's JSON leaves such blocks out.
            continue
        if name not in table:
            raise ValueError("%s.%s has no JSON mapping; add it to job_to_api() in deploylib.py"
                             % (where, name))
        api_name, conversion = table[name]
        out[api_name] = conversion(value, "%s.%s" % (where, name)) if conversion else value
    return out


def _duration(value, where):
    return go_duration_ns(value)


def _int(value, where):
    if value != int(value):
        raise ValueError("%s: %r is not a whole number" % (where, value))
    return int(value)


def _networks(networks, where):
    out = []
    for i, network in enumerate(networks):
        api = {}
        if "mode" in network:
            api["Mode"] = network["mode"]
        dynamic, reserved = [], []
        for label, port in network.get("port", {}).items():
            entry = {"Label": label}
            if "to" in port:
                entry["To"] = _int(port["to"], where)
            if "static" in port:
                entry["Value"] = _int(port["static"], where)
                reserved.append(entry)
            else:
                dynamic.append(entry)
        unknown = set(network) - {"mode", "port"}
        if unknown:
            raise ValueError("%s[%d]: no JSON mapping for %s" % (where, i, sorted(unknown)))
        if dynamic:
            api["DynamicPorts"] = dynamic
        if reserved:
            api["ReservedPorts"] = reserved
        out.append(api)
    return out


def _constraints(constraints, where):
    table = {"attribute": ("LTarget", None), "operator": ("Operand", None), "value": ("RTarget", None)}
    return [_convert(c, table, "%s[%d]" % (where, i)) for i, c in enumerate(constraints)]


def _volumes(volumes, where):
    table = {"type": ("Type", None), "source": ("Source", None), "read_only": ("ReadOnly", None)}
    out = {}
    for name, volume in volumes.items():
        api = {"Name": name}
        api.update(_convert(volume, table, "%s.%s" % (where, name)))
        out[name] = api
    return out


def _block(table):
    return lambda value, where: _convert(value, table, where)


def _block_list(table):
    return lambda values, where: [_convert(v, table, "%s[%d]" % (where, i)) for i, v in enumerate(values)]


_CHECK_RESTART = {"limit": ("Limit", _int), "grace": ("Grace", _duration)}
_CHECK = {"name": ("Name", None), "type": ("Type", None), "path": ("Path", None),
          "interval": ("Interval", _duration), "timeout": ("Timeout", _duration),
          "check_restart": ("CheckRestart", _block(_CHECK_RESTART))}
_SERVICE = {"name": ("Name", None), "provider": ("Provider", None), "port": ("PortLabel", None),
            "tags": ("Tags", None), "check": ("Checks", _block_list(_CHECK))}
_TEMPLATE = {"destination": ("DestPath", None), "data": ("EmbeddedTmpl", None),
             "change_mode": ("ChangeMode", None), "change_signal": ("ChangeSignal", None),
             "env": ("Envvars", None), "perms": ("Perms", None)}
_VOLUME_MOUNT = {"volume": ("Volume", None), "destination": ("Destination", None),
                 "read_only": ("ReadOnly", None)}
_TASK = {
    "driver": ("Driver", None),
    "user": ("User", None),
    "kill_timeout": ("KillTimeout", _duration),
    "kill_signal": ("KillSignal", None),
    # The driver's config block stays a map with the driver's own lower-case keys.
    "config": ("Config", None),
    "identity": ("Identity", _block({"env": ("Env", None), "file": ("File", None)})),
    "env": ("Env", None),
    "service": ("Services", _block_list(_SERVICE)),
    "volume_mount": ("VolumeMounts", _block_list(_VOLUME_MOUNT)),
    "template": ("Templates", _block_list(_TEMPLATE)),
    "resources": ("Resources", _block({"cpu": ("CPU", _int), "memory": ("MemoryMB", _int)})),
}


def _tasks(tasks, where):
    out = []
    for name, task in tasks.items():
        api = {"Name": name}
        api.update(_convert(task, _TASK, "%s.%s" % (where, name)))
        out.append(api)
    return out


_GROUP = {
    "count": ("Count", _int),
    "constraint": ("Constraints", _constraints),
    "network": ("Networks", _networks),
    "volume": ("Volumes", _volumes),
    "ephemeral_disk": ("EphemeralDisk", _block({"sticky": ("Sticky", None), "migrate": ("Migrate", None),
                                                "size": ("SizeMB", _int)})),
    "restart": ("RestartPolicy", _block({"attempts": ("Attempts", _int), "interval": ("Interval", _duration),
                                         "delay": ("Delay", _duration), "mode": ("Mode", None)})),
    "update": ("Update", _block({"max_parallel": ("MaxParallel", _int), "stagger": ("Stagger", _duration),
                                 "health_check": ("HealthCheck", None),
                                 "min_healthy_time": ("MinHealthyTime", _duration),
                                 "healthy_deadline": ("HealthyDeadline", _duration),
                                 "progress_deadline": ("ProgressDeadline", _duration),
                                 "auto_revert": ("AutoRevert", None)})),
    "task": ("Tasks", _tasks),
}


def job_to_api(decoded):
    """Convert hcldec's output for one job file to {"Job": {...}}, the body POST /v1/jobs accepts.

    Durations become integer nanoseconds and names become the API's PascalCase,
    as `nomad job run -output` writes them. Keys the file does not set are left
    out, so Nomad applies the same defaults as for the HCL file.
    """
    jobs = decoded.get("job", {})
    if len(jobs) != 1:
        raise ValueError("expected exactly one job block, found %d" % len(jobs))
    (job_id, job), = jobs.items()
    api = {"ID": job_id, "Name": job_id}
    table = {"type": ("Type", None), "namespace": ("Namespace", None), "datacenters": ("Datacenters", None),
             "priority": ("Priority", _int)}
    for name, value in job.items():
        if name == "group":
            continue
        api.update(_convert({name: value}, table, "job"))
    groups = []
    for name, group in job.get("group", {}).items():
        api_group = {"Name": name}
        api_group.update(_convert(group, _GROUP, "group.%s" % name))
        groups.append(api_group)
    api["TaskGroups"] = groups
    return {"Job": api}


def dump_json(value):
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------
# Nomad ACL policy semantics, as far as the tests judge them.

def _closest(patterns, name):
    """Nomad's rule choice: an exact match wins, else the matching glob closest in length to name."""
    if name in patterns:
        return name
    matches = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
    if not matches:
        return None
    return min(matches, key=lambda p: abs(len(name) - len(p.replace("*", ""))))


NAMESPACE_POLICY_CAPABILITIES = {
    "deny": [],
    "read": ["list-jobs", "parse-job", "read-job", "csi-list-volume", "csi-read-volume",
             "list-scaling-policies", "read-scaling-policy", "read-job-scaling", "host-volume-read"],
}


def namespace_capabilities(policy, namespace):
    """The namespace capabilities the policy grants in namespace (empty set when no rule matches)."""
    rules = policy.get("namespace", {})
    chosen = _closest(list(rules), namespace)
    if chosen is None:
        return set()
    rule = rules[chosen]
    caps = set(rule.get("capabilities", []))
    if "policy" in rule:
        caps |= set(NAMESPACE_POLICY_CAPABILITIES.get(rule["policy"], ["<policy %s>" % rule["policy"]]))
    return caps


def variable_capabilities(policy, namespace, path):
    """The variable capabilities the policy grants on path in namespace."""
    rules = policy.get("namespace", {})
    chosen = _closest(list(rules), namespace)
    if chosen is None:
        return set()
    paths = rules[chosen].get("variables", {}).get("path", {})
    chosen_path = _closest(list(paths), path)
    return set(paths[chosen_path]["capabilities"]) if chosen_path is not None else set()


# ---------------------------------------------------------------------------

def write_json_twins():
    for path in JOBS.values():
        with open(json_twin(path), "w", encoding="utf-8") as f:
            f.write(dump_json(job_to_api(decode_job(path))))
        print("wrote %s" % json_twin(path))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-json"]:
        sys.exit("usage: NM_DEPLOY_TOOLS=DIR %s --write-json" % sys.argv[0])
    write_json_twins()
