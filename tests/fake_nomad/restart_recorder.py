#!/usr/bin/env python3
"""Stand-in for `systemctl restart nomad` in nomad-medic's integration tests.

It appends one JSON line to the log file, optionally sleeps, reports the
restart to fake_nomad.py with POST /_test/restarted, and exits with the
requested status. The log line is written before the sleep, so a test that
kills a slow run can still check that the command started.

Usage:
    restart_recorder.py --server http://127.0.0.1:PORT --log FILE
                        (--node ID | --server-name NAME) [--exit CODE] [--sleep S]

Exit status: CODE (default 0) once the restart is reported, 2 for invalid
arguments (including a --server that is not loopback), 3 when the log cannot
be written or fake_nomad cannot be reached or rejects the report.
Standard library only.
"""

import argparse
import http.client
import ipaddress
import json
import os
import sys
import time
import urllib.parse

REPORT_TIMEOUT_S = 10.0


def loopback_endpoint(url):
    """Return (host, port) of an http:// URL whose host is a loopback IP literal.

    Raises ValueError naming the problem. Host names are rejected because a
    name could resolve to another machine.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("only http:// URLs are supported")
    host = parts.hostname
    if host is None:
        raise ValueError("the URL has no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("host %r is not an IP address; use 127.0.0.1 or [::1]" % host) from None
    if address.version == 4 and not address.is_loopback:
        raise ValueError("%s is not in 127.0.0.0/8" % address)
    if address.version == 6 and address != ipaddress.ip_address("::1"):
        raise ValueError("%s is not ::1" % address)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if port is None:
        raise ValueError("the URL has no port")
    return str(address), port


def append_line(path, record):
    """Append record as one JSON line with a single write, so concurrent runs never interleave."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def report_restart(host, port, target, argv):
    """POST the restart to fake_nomad; returns None or an error message."""
    body = dict(target, argv=argv)
    connection = http.client.HTTPConnection(host, port, timeout=REPORT_TIMEOUT_S)
    try:
        connection.request("POST", "/_test/restarted", body=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace").strip()
    except OSError as err:
        return "cannot reach fake_nomad at %s:%d: %s" % (host, port, err)
    finally:
        connection.close()
    if response.status != 200:
        return "fake_nomad rejected the restart with status %d: %s" % (response.status, text)
    return None


def main(argv=None):
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog=os.path.basename(argv[0]),
        description="Record a Nomad agent restart for fake_nomad.py (loopback only).",
        allow_abbrev=False)
    parser.add_argument("--server", required=True, metavar="URL",
                        help="fake_nomad base URL, such as http://127.0.0.1:4646; the host "
                             "must be in 127.0.0.0/8 or be [::1]")
    parser.add_argument("--log", required=True, metavar="FILE",
                        help="file that receives one JSON line per run (created if missing)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", metavar="ID", help="client node ID whose host agent is restarted")
    target.add_argument("--server-name", metavar="NAME",
                        help="Name of the server whose agent is restarted")
    parser.add_argument("--exit", type=int, default=0, dest="exit_code", metavar="CODE",
                        help="exit status after reporting the restart (default 0)")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="S",
                        help="seconds to wait between the log line and the report (default 0)")
    args = parser.parse_args(argv[1:])

    try:
        host, port = loopback_endpoint(args.server)
    except ValueError as err:
        sys.stderr.write("restart_recorder: invalid --server %r: %s\n" % (args.server, err))
        return 2
    if args.sleep < 0:
        sys.stderr.write("restart_recorder: invalid --sleep %r: use seconds >= 0\n" % args.sleep)
        return 2

    if args.node is not None:
        target_fields = {"node": args.node}
    else:
        target_fields = {"server": args.server_name}
    try:
        append_line(args.log, dict(target_fields, time=time.time(), argv=list(argv)))
    except OSError as err:
        sys.stderr.write("restart_recorder: cannot append to --log %r: %s\n" % (args.log, err))
        return 3

    if args.sleep:
        time.sleep(args.sleep)
    error = report_restart(host, port, target_fields, list(argv))
    if error:
        sys.stderr.write("restart_recorder: %s\n" % error)
        return 3
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
