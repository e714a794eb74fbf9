"""Helpers for nomad-medic's integration tests.

FakeNomad runs tests/fake_nomad/fake_nomad.py as a child process on
loopback and wraps its control API, including ticks, recorded agent restarts
and the argv of restart_recorder.py, the stand-in for `systemctl restart
nomad`. run_medic runs the binary named by NOMAD_MEDIC_BIN with a clean
environment. write_config and zero_grace_policy write libconfig policy files.

`scenarios` (tests/fake_nomad/scenarios.py) is importable from here:
    from harness import FakeNomad, scenarios
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

INTEGRATION_DIR = os.path.dirname(os.path.abspath(__file__))
FAKE_NOMAD_DIR = os.path.join(os.path.dirname(INTEGRATION_DIR), "fake_nomad")
FAKE_NOMAD = os.environ.get("NM_FAKE_NOMAD") or os.path.join(FAKE_NOMAD_DIR, "fake_nomad.py")
RESTART_RECORDER = os.path.join(os.path.dirname(os.path.abspath(FAKE_NOMAD)), "restart_recorder.py")

sys.path.insert(0, os.path.dirname(os.path.abspath(FAKE_NOMAD)))
import scenarios  # noqa: E402,F401  (re-exported for tests)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class HttpReply:
    """One HTTP response: status, headers (http.client.HTTPMessage, case-insensitive), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class FakeNomad:
    """The test Nomad API server as a context manager.

    with FakeNomad(scenario=scenarios.two_namespaces()) as nomad:
        run_medic(["pass"], env={"NOMAD_ADDR": nomad.address})
        assert nomad.writes() == [...]

    The process gets SIGTERM (then SIGKILL after 5 s) by its pid on exit.
    """

    def __init__(self, scenario=None, scenario_name=None, verbose=False):
        self.scenario = scenario
        self.scenario_name = scenario_name
        self.verbose = verbose
        self.process = None
        self.port = None
        self.address = None
        self.returncode = None
        self._tmpdir = None
        self._stderr = None

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-nomad-")
        port_file = os.path.join(self._tmpdir.name, "port")
        command = [sys.executable, FAKE_NOMAD, "--port-file", port_file]
        if self.scenario_name:
            command += ["--scenario-name", self.scenario_name]
        if self.verbose:
            command.append("--verbose")
        # stderr goes to a file so a chatty server can never block on a full pipe.
        self._stderr = open(os.path.join(self._tmpdir.name, "stderr"), "w+", encoding="utf-8")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if os.path.exists(port_file):
                with open(port_file, encoding="ascii") as handle:
                    self.port = int(handle.read().strip())
                break
            if self.process.poll() is not None:
                raise RuntimeError("fake_nomad exited with status %d before listening; stderr:\n%s"
                                   % (self.process.returncode, self.stderr_text()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake_nomad did not write its port file within %.0f s; "
                                   "stderr:\n%s" % (START_TIMEOUT_S, self.stderr_text()))
            time.sleep(0.02)
        self.address = "http://127.0.0.1:%d" % self.port
        if self.scenario is not None:
            self.load(self.scenario)
        return self

    def stop(self):
        """Stop the server by its pid and return its exit status."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.returncode = self.process.returncode
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def stderr_text(self):
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    # -- HTTP -------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30):
        """Send one request to the server (Nomad API or control API) and return an HttpReply."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return HttpReply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path, headers=None, timeout=30):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def _control(self, method, path, body=None):
        reply = self.request(method, path, body=body)
        if reply.status != 200:
            raise RuntimeError("fake_nomad control request %s %s failed with status %d: %s"
                               % (method, path, reply.status, reply.text().strip()))
        return reply.json()

    # -- control API --------------------------------------------------------------

    def load(self, scenario):
        """Replace the server's state with scenario (a dict). Faults and recorded requests stay."""
        return self._control("PUT", "/_test/scenario", scenario)

    def state(self):
        return self._control("GET", "/_test/state")

    def requests(self):
        """Return every recorded /v1 request in order (method, path, query, params, headers, body, time)."""
        return self._control("GET", "/_test/requests")

    def clear_requests(self):
        self._control("DELETE", "/_test/requests")

    def faults(self, rules):
        """Replace the fault rules (a list of dicts; see tests/fake_nomad/README.md)."""
        self._control("PUT", "/_test/faults", rules)

    def clear_faults(self):
        self._control("DELETE", "/_test/faults")

    def mutate(self, ops):
        """Apply state changes atomically; returns the new X-Nomad-Index."""
        return self._control("PUT", "/_test/mutate", ops)["index"]

    def tick(self, count=1):
        """Advance the logical clock by count ticks, applying what falls due; returns the tick."""
        return self._control("POST", "/_test/tick", {"count": count})["tick"]

    def restarts(self):
        """Return every recorded agent restart in order (seq, time, tick, node, server, states)."""
        return self._control("GET", "/_test/restarts")

    def variables(self):
        """Return every variable (Namespace, Path, Items, Lock, indexes) from /_test/state."""
        return self.state()["variables"]

    def restart_recorder_argv(self, log, node=None, server=None, exit_code=None, sleep_s=None):
        """Return the argv that restarts one host agent through restart_recorder.py.

        Give exactly one of node (a client node ID) and server (a server Name).
        log is the file that receives one JSON line per run. The product runs
        this vector in place of `systemctl restart nomad`.
        """
        if (node is None) == (server is None):
            raise ValueError("restart_recorder_argv needs exactly one of node and server")
        if self.address is None:
            raise RuntimeError("fake_nomad is not running; call start() first")
        argv = [sys.executable, RESTART_RECORDER, "--server", self.address, "--log", log]
        argv += ["--node", node] if node is not None else ["--server-name", server]
        if exit_code is not None:
            argv += ["--exit", str(exit_code)]
        if sleep_s is not None:
            argv += ["--sleep", str(sleep_s)]
        return argv

    def writes(self):
        """Return the recorded requests whose method is not GET."""
        return [r for r in self.requests() if r["method"] != "GET"]

    def service_deletes(self):
        """Return (namespace, registration ID) for every recorded DELETE /v1/service/NAME/ID."""
        deletes = []
        for entry in self.writes():
            parts = entry["path"].split("/")
            if entry["method"] == "DELETE" and len(parts) == 5 and parts[2] == "service":
                namespace = entry["params"].get("namespace", "default")
                deletes.append((namespace, parts[4]))
        return deletes


def run_medic(args, env=None, timeout=60, input=None):
    """Run nomad-medic with args and return the CompletedProcess (text stdout/stderr).

    The binary comes from NOMAD_MEDIC_BIN (ctest sets it). The child gets the
    current environment minus every NOMAD_* variable, plus env.
    """
    binary = os.environ.get("NOMAD_MEDIC_BIN")
    if not binary:
        raise RuntimeError("NOMAD_MEDIC_BIN is not set; run the integration tests through ctest "
                           "or export NOMAD_MEDIC_BIN=/path/to/build/nomad-medic")
    child_env = {name: value for name, value in os.environ.items()
                 if not name.startswith("NOMAD_")}
    child_env.update(env or {})
    return subprocess.run([binary] + list(args), env=child_env, input=input,
                          capture_output=True, text=True, timeout=timeout, check=False)


def write_config(tmpdir, text, name="policy.conf"):
    """Write text to tmpdir/name and return the path."""
    path = os.path.join(tmpdir, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def libconfig_string(value):
    """Quote value as a libconfig string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"%s"' % escaped


def zero_grace_policy(address, db, extra="", token=None, mode="enforce", interval="1s",
                      pause_file=None, approval_ttl="1h", grace="0s", cooldown="0s",
                      rate_limit="100/h", system_gc=None):
    """Return libconfig policy text that acts at once: enforce mode, zero grace and cooldown.

    address is the Nomad address, db the journal path. pause_file defaults to
    a "pause" file next to db (absent, so actions run). system_gc is the body
    of the rules.system_gc group; by default it has the same cooldown and rate
    limit as orphan_services. extra is appended verbatim at top level.
    """
    if pause_file is None:
        pause_file = os.path.join(os.path.dirname(os.path.abspath(db)), "pause")
    if system_gc is None:
        system_gc = "cooldown = %s; rate_limit = %s;" % (libconfig_string(cooldown),
                                                          libconfig_string(rate_limit))
    nomad_lines = ["  address = %s;" % libconfig_string(address)]
    if token is not None:
        nomad_lines.append("  token = %s;" % libconfig_string(token))
    return "\n".join([
        "nomad = {",
        *nomad_lines,
        "};",
        "journal = {",
        "  path = %s;" % libconfig_string(db),
        "};",
        "controller = {",
        "  mode = %s;" % libconfig_string(mode),
        "  interval = %s;" % libconfig_string(interval),
        "  pause_file = %s;" % libconfig_string(pause_file),
        "  approval_ttl = %s;" % libconfig_string(approval_ttl),
        "};",
        "rules = {",
        "  orphan_services = {",
        "    grace = %s;" % libconfig_string(grace),
        "    cooldown = %s;" % libconfig_string(cooldown),
        "    rate_limit = %s;" % libconfig_string(rate_limit),
        "  };",
        "  system_gc = { %s };" % system_gc,
        "};",
        extra,
        "",
    ])
