"""Self-test of the test Nomad API server (tests/fake_nomad/fake_nomad.py).

Run from tests/integration: python3 -m unittest -v test_fake_nomad
"""

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import harness
from harness import FakeNomad, scenarios

TOKEN = "3f1c0b52-8f0e-4d7a-a7a5-6c2f0d9e1b44"

SERVER = None


def setUpModule():
    global SERVER
    SERVER = FakeNomad().start()


def tearDownModule():
    SERVER.stop()


def raw_get(path, headers=None, connection=None):
    """GET over http.client; returns (status, [(name, value)] as sent, body bytes)."""
    own = connection is None
    if own:
        connection = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        if own:
            connection.close()


def query(path, **params):
    return "%s?%s" % (path, urllib.parse.urlencode(params)) if params else path


class ServerTestCase(unittest.TestCase):
    scenario_builder = staticmethod(scenarios.two_namespaces)

    def setUp(self):
        self.scenario = self.scenario_builder()
        SERVER.clear_faults()
        SERVER.load(self.scenario)
        SERVER.clear_requests()

    def get(self, path, **headers):
        return SERVER.get(path, headers=headers)

    def get_json(self, path, **headers):
        reply = SERVER.get(path, headers=headers)
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()

    def follow_pages(self, path, per_page, **params):
        """Read every page; return (items, tokens seen)."""
        items, tokens = [], []
        token = None
        while True:
            page_params = dict(params, per_page=per_page)
            if token:
                page_params["next_token"] = token
            reply = self.get(query(path, **page_params))
            self.assertEqual(reply.status, 200, reply.body)
            page = reply.json()
            self.assertLessEqual(len(page), per_page)
            items.extend(page)
            token = reply.headers.get("X-Nomad-Nexttoken")
            if not token:
                return items, tokens
            tokens.append(token)


class StatusAgentTest(ServerTestCase):
    def test_leader_bare_json_string(self):
        reply = self.get("/v1/status/leader")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.text(), '"127.0.0.1:4647"')

    def test_leader_missing_500(self):
        SERVER.load(dict(self.scenario, leader=""))
        reply = self.get("/v1/status/leader")
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.text(), "No cluster leader")
        self.assertEqual(reply.headers["Content-Type"], "text/plain; charset=utf-8")

    def test_leader_missing_stale_empty(self):
        SERVER.load(dict(self.scenario, leader=""))
        reply = self.get("/v1/status/leader?stale")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json(), "")

    def test_peers_from_raft(self):
        self.assertEqual(self.get_json("/v1/status/peers"), ["127.0.0.1:4647"])

    def test_agent_self_lowercase(self):
        body = self.get_json("/v1/agent/self")
        self.assertEqual(sorted(body), ["config", "member", "stats"])
        self.assertEqual(body["stats"]["nomad"]["leader_addr"], "127.0.0.1:4647")
        self.assertEqual(body["config"]["Region"], "global")

    def test_agent_members(self):
        body = self.get_json("/v1/agent/members")
        self.assertEqual(body["ServerRegion"], "global")
        self.assertEqual(body["Members"][0]["Port"], 4648)

    def test_agent_health_ok(self):
        body = self.get_json("/v1/agent/health")
        self.assertTrue(body["server"]["ok"])
        self.assertTrue(body["client"]["ok"])

    def test_agent_health_no_leader(self):
        SERVER.load(dict(self.scenario, leader=""))
        reply = self.get("/v1/agent/health?type=server")
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertFalse(reply.json()["server"]["ok"])
        self.assertNotIn("client", reply.json())

    def test_operator_defaults(self):
        raft = self.get_json("/v1/operator/raft/configuration")
        self.assertEqual(raft["Servers"][0]["RaftProtocol"], "3")
        self.assertTrue(raft["Servers"][0]["Leader"])
        scheduler = self.get_json("/v1/operator/scheduler/configuration")
        self.assertEqual(scheduler["SchedulerConfig"]["SchedulerAlgorithm"], "binpack")
        self.assertTrue(scheduler["KnownLeader"])
        self.assertTrue(self.get_json("/v1/operator/autopilot/health")["Healthy"])

    def test_autopilot_unhealthy_429(self):
        SERVER.load(dict(self.scenario, autopilot={"Healthy": False}))
        reply = self.get("/v1/operator/autopilot/health")
        self.assertEqual(reply.status, 429)
        self.assertFalse(reply.json()["Healthy"])

    def test_autopilot_non_get_404(self):
        reply = SERVER.request("PUT", "/v1/operator/autopilot/health")
        self.assertEqual(reply.status, 404)


class WireTest(ServerTestCase):
    def test_read_headers_exact_case(self):
        status, headers, _ = raw_get("/v1/nodes")
        names = [name for name, _ in headers]
        self.assertEqual(status, 200)
        self.assertIn("X-Nomad-Index", names)
        self.assertIn("X-Nomad-Knownleader", names)
        self.assertIn("X-Nomad-Lastcontact", names)
        self.assertIn("Content-Length", names)

    def test_next_token_header_case(self):
        _, headers, _ = raw_get("/v1/nodes?per_page=1")
        self.assertIn("X-Nomad-Nexttoken", [name for name, _ in headers])

    def test_header_values(self):
        reply = self.get("/v1/allocations")
        state = SERVER.state()
        self.assertEqual(reply.headers["X-Nomad-Index"], str(state["table_index"]["allocs"]))
        self.assertEqual(reply.headers["X-Nomad-Knownleader"], "true")
        self.assertEqual(reply.headers["X-Nomad-Lastcontact"], "0")

    def test_write_sets_index_only(self):
        before = SERVER.state()["index"]
        reply = SERVER.request("PUT", "/v1/system/gc")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.headers["X-Nomad-Index"], str(before + 1))
        self.assertIsNone(reply.headers.get("X-Nomad-Knownleader"))
        self.assertIsNone(reply.headers.get("X-Nomad-Lastcontact"))

    def test_keep_alive_two_requests(self):
        connection = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=10)
        try:
            first = raw_get("/v1/nodes", connection=connection)
            second = raw_get("/v1/status/leader", connection=connection)
        finally:
            connection.close()
        self.assertEqual(first[0], 200)
        self.assertEqual(second[0], 200)
        self.assertEqual(second[2], b'"127.0.0.1:4647"')

    def test_gzip_when_accepted(self):
        reply = self.get("/v1/nodes", **{"Accept-Encoding": "gzip"})
        self.assertEqual(reply.headers["Content-Encoding"], "gzip")
        self.assertEqual(int(reply.headers["Content-Length"]), len(reply.body))
        self.assertEqual(len(json.loads(gzip.decompress(reply.body))), 5)

    def test_gzip_error_body(self):
        reply = self.get("/v1/node/%s" % ("0" * 36), **{"Accept-Encoding": "gzip"})
        self.assertEqual(reply.status, 404)
        self.assertEqual(gzip.decompress(reply.body), b"node not found")

    def test_no_gzip_by_default(self):
        reply = self.get("/v1/nodes")
        self.assertIsNone(reply.headers.get("Content-Encoding"))

    def test_wrong_method_405(self):
        for method, path in (("POST", "/v1/nodes"), ("DELETE", "/v1/allocations"),
                             ("PUT", "/v1/status/leader"), ("POST", "/v1/system/gc"),
                             ("GET", "/v1/system/gc")):
            with self.subTest(method=method, path=path):
                reply = SERVER.request(method, path)
                self.assertEqual(reply.status, 405)
                self.assertEqual(reply.text(), "Invalid method")

    def test_unknown_path_404_text(self):
        reply = self.get("/v1/no-such-endpoint")
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.headers["Content-Type"], "text/plain; charset=utf-8")

    def test_known_leader_false_scenario(self):
        SERVER.load(dict(self.scenario, known_leader=False))
        reply = self.get("/v1/nodes")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["X-Nomad-Knownleader"], "false")
        self.assertEqual(len(reply.json()), 5)

    def test_no_leader_read_500(self):
        SERVER.load(dict(self.scenario, leader=""))
        reply = self.get("/v1/allocations")
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.text(), "No cluster leader")

    def test_no_leader_stale_read(self):
        SERVER.load(dict(self.scenario, leader=""))
        reply = self.get("/v1/allocations?stale=true")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["X-Nomad-Knownleader"], "false")

    def test_stale_invalid_400(self):
        self.assertEqual(self.get("/v1/nodes?stale=maybe").status, 400)

    def test_region_accepted_and_rejected(self):
        self.assertEqual(self.get("/v1/nodes?region=global").status, 200)
        other = self.get("/v1/nodes?region=eu-west")
        self.assertEqual(other.status, 500)
        self.assertEqual(other.text(), "No path to region")

    def test_last_contact_from_scenario(self):
        SERVER.load(dict(self.scenario, last_contact_ms=250))
        self.assertEqual(self.get("/v1/nodes").headers["X-Nomad-Lastcontact"], "250")


class NodeTest(ServerTestCase):
    def test_list_stubs_sorted(self):
        nodes = self.get_json("/v1/nodes")
        ids = [n["ID"] for n in nodes]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(nodes), 5)
        for node in nodes:
            self.assertNotIn("StatusUpdatedAt", node)
            self.assertIn("Address", node)
            self.assertIsNone(node["Attributes"])

    def test_list_os_attributes(self):
        nodes = self.get_json("/v1/nodes?os=true")
        self.assertEqual(nodes[0]["Attributes"], {"os.name": "ubuntu"})

    def test_pagination_by_id(self):
        everything = [n["ID"] for n in self.get_json("/v1/nodes")]
        items, tokens = self.follow_pages("/v1/nodes", 2)
        self.assertEqual([n["ID"] for n in items], everything)
        self.assertEqual(tokens, [everything[2], everything[4]])

    def test_read_full_node(self):
        node_id = self.scenario["nodes"][0]["ID"]
        node = self.get_json("/v1/node/%s" % node_id)
        self.assertEqual(node["ID"], node_id)
        self.assertIsInstance(node["StatusUpdatedAt"], int)
        self.assertLess(abs(node["StatusUpdatedAt"] - time.time()), 3600)
        self.assertEqual(node["Events"][0]["Message"], "Node registered")
        self.assertEqual(node["SecretID"], "")

    def test_read_relative_status_time(self):
        SERVER.load(scenarios.two_namespaces(down_node=True))
        down_id = scenarios.expected(scenarios.two_namespaces(down_node=True))["down_nodes"][0]
        node = self.get_json("/v1/node/%s" % down_id)
        self.assertEqual(node["Status"], "down")
        self.assertAlmostEqual(node["StatusUpdatedAt"], time.time() - 7200, delta=60)

    def test_read_missing_404(self):
        reply = self.get("/v1/node/%s" % ("a" * 8 + "-0000-0000-0000-" + "0" * 12))
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.text(), "node not found")
        self.assertIn("X-Nomad-Index", reply.headers)

    def test_node_allocations_full(self):
        node_id = self.scenario["nodes"][0]["ID"]
        allocs = self.get_json("/v1/node/%s/allocations" % node_id)
        expected = {a["ID"] for a in self.scenario["allocations"] if a["NodeID"] == node_id}
        self.assertEqual({a["ID"] for a in allocs}, expected)
        self.assertIn("Job", allocs[0])


class AllocationTest(ServerTestCase):
    def test_default_namespace_only(self):
        allocs = self.get_json("/v1/allocations")
        self.assertTrue(allocs)
        self.assertEqual({a["Namespace"] for a in allocs}, {"default"})

    def test_named_namespace(self):
        allocs = self.get_json("/v1/allocations?namespace=prod")
        self.assertEqual({a["Namespace"] for a in allocs}, {"prod"})

    def test_wildcard_namespace(self):
        allocs = self.get_json("/v1/allocations?namespace=*")
        self.assertEqual(len(allocs), len(self.scenario["allocations"]))

    def test_stub_fields(self):
        alloc = self.get_json("/v1/allocations")[0]
        for field in ("ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID",
                      "JobType", "JobVersion", "TaskGroup", "DesiredStatus", "ClientStatus",
                      "TaskStates", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime"):
            self.assertIn(field, alloc)
        self.assertNotIn("Job", alloc)
        self.assertGreater(alloc["CreateTime"], 10**18)

    def test_order_by_create_index(self):
        allocs = self.get_json("/v1/allocations?namespace=*")
        keys = [(a["CreateIndex"], a["ID"]) for a in allocs]
        self.assertEqual(keys, sorted(keys))

    def test_pagination_across_namespaces(self):
        everything = self.get_json("/v1/allocations?namespace=*")
        items, tokens = self.follow_pages("/v1/allocations", 4, namespace="*")
        self.assertEqual([a["ID"] for a in items], [a["ID"] for a in everything])
        self.assertEqual(tokens[0], "%d.%s" % (everything[4]["CreateIndex"], everything[4]["ID"]))
        self.assertEqual({a["Namespace"] for a in items}, {"default", "prod"})

    def test_task_states_false(self):
        allocs = self.get_json("/v1/allocations?task_states=false")
        self.assertTrue(all(a["TaskStates"] is None for a in allocs))
        self.assertIsNotNone(self.get_json("/v1/allocations")[0]["TaskStates"])

    def test_read_ignores_namespace(self):
        prod = [a for a in self.scenario["allocations"] if a["Namespace"] == "prod"][0]
        alloc = self.get_json("/v1/allocation/%s?namespace=default" % prod["ID"])
        self.assertEqual(alloc["ID"], prod["ID"])
        self.assertEqual(alloc["Namespace"], "prod")
        self.assertEqual(alloc["Job"]["ID"], prod["JobID"])

    def test_read_missing_404(self):
        reply = self.get("/v1/allocation/%s" % scenarios.stable_uuid("nothing"))
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.text(), "alloc not found")

    def test_job_lists_registered_services(self):
        reg = self.scenario["services"][0]
        alloc = self.get_json("/v1/allocation/%s" % reg["AllocID"])
        names = [s["Name"] for t in alloc["Job"]["TaskGroups"][0]["Tasks"]
                 for s in t["Services"] or []]
        self.assertIn(reg["ServiceName"], names)


class EvaluationTest(ServerTestCase):
    def test_status_filter(self):
        evals = self.get_json("/v1/evaluations?namespace=*&status=blocked")
        self.assertEqual(len(evals), 2)
        self.assertEqual({e["Status"] for e in evals}, {"blocked"})

    def test_namespace_default(self):
        evals = self.get_json("/v1/evaluations")
        self.assertEqual({e["Namespace"] for e in evals}, {"default"})

    def test_pagination_token_form(self):
        everything = self.get_json("/v1/evaluations?namespace=*")
        items, tokens = self.follow_pages("/v1/evaluations", 3, namespace="*")
        self.assertEqual([e["ID"] for e in items], [e["ID"] for e in everything])
        self.assertEqual(len(tokens), (len(everything) - 1) // 3)
        self.assertRegex(tokens[0], r"^\d+\.[0-9a-f-]{36}$")

    def test_filter_with_status_400(self):
        reply = self.get(query("/v1/evaluations", status="complete", filter='JobID == "web"'))
        self.assertEqual(reply.status, 400)


class ServiceTest(ServerTestCase):
    def test_list_grouped_all_namespaces(self):
        body = self.get_json("/v1/services?namespace=*")
        self.assertEqual([group["Namespace"] for group in body], ["default", "prod"])
        names = [s["ServiceName"] for s in body[0]["Services"]]
        self.assertIn("billing-api", names)
        self.assertNotIn("ID", body[0]["Services"][0])

    def test_list_empty_namespace(self):
        self.assertEqual(self.get_json("/v1/services?namespace=staging"), [])

    def test_read_by_name(self):
        regs = self.get_json("/v1/service/web-http?namespace=prod")
        expected = [r for r in self.scenario["services"]
                    if r["ServiceName"] == "web-http" and r["Namespace"] == "prod"]
        self.assertEqual(len(regs), len(expected))
        self.assertTrue(all(r["Namespace"] == "prod" for r in regs))
        self.assertIsInstance(regs[0]["Port"], int)

    def test_read_paginated(self):
        everything = self.get_json("/v1/service/web-http?namespace=prod")
        items, tokens = self.follow_pages("/v1/service/web-http", 1, namespace="prod")
        self.assertEqual([r["ID"] for r in items], [r["ID"] for r in everything])
        self.assertEqual(tokens[0], "prod.%s" % everything[1]["ID"])

    def test_delete_respects_namespace(self):
        reg = [r for r in self.scenario["services"] if r["Namespace"] == "prod"][0]
        path = "/v1/service/%s/%s" % (reg["ServiceName"], reg["ID"])
        wrong = SERVER.request("DELETE", path + "?namespace=default")
        self.assertEqual(wrong.status, 500)
        self.assertEqual(wrong.text(), "service registration not found")
        right = SERVER.request("DELETE", path + "?namespace=prod")
        self.assertEqual(right.status, 200)
        self.assertEqual(right.body, b"")
        remaining = {(r["Namespace"], r["ID"]) for r in SERVER.state()["services"]}
        self.assertNotIn(("prod", reg["ID"]), remaining)
        self.assertEqual(len(remaining), len(self.scenario["services"]) - 1)

    def test_delete_ignores_name(self):
        reg = self.scenario["services"][0]
        reply = SERVER.request("DELETE", "/v1/service/not-the-name/%s" % reg["ID"])
        self.assertEqual(reply.status, 200)
        remaining = {(r["Namespace"], r["ID"]) for r in SERVER.state()["services"]}
        self.assertNotIn((reg["Namespace"], reg["ID"]), remaining)

    def test_delete_bumps_index(self):
        reg = self.scenario["services"][0]
        before = SERVER.state()["index"]
        reply = SERVER.request("DELETE", "/v1/service/x/%s?namespace=%s"
                               % (reg["ID"], reg["Namespace"]))
        self.assertEqual(reply.headers["X-Nomad-Index"], str(before + 1))
        listing = self.get("/v1/services?namespace=*")
        self.assertEqual(listing.headers["X-Nomad-Index"], str(before + 1))

    def test_delete_twice_not_found(self):
        reg = self.scenario["services"][0]
        path = "/v1/service/%s/%s?namespace=%s" % (reg["ServiceName"], reg["ID"], reg["Namespace"])
        self.assertEqual(SERVER.request("DELETE", path).status, 200)
        again = SERVER.request("DELETE", path)
        self.assertEqual(again.status, 500)
        self.assertEqual(again.text(), "service registration not found")

    def test_other_methods_405(self):
        reg = self.scenario["services"][0]
        for method in ("GET", "PUT", "POST"):
            with self.subTest(method=method):
                reply = SERVER.request(method, "/v1/service/%s/%s" % (reg["ServiceName"], reg["ID"]))
                self.assertEqual(reply.status, 405)
        self.assertEqual(SERVER.request("DELETE", "/v1/service/web-http").status, 405)

    def test_alloc_services(self):
        reg = self.scenario["services"][0]
        regs = self.get_json("/v1/allocation/%s/services" % reg["AllocID"])
        self.assertEqual([r["ID"] for r in regs], [reg["ID"]])


class SystemGcTest(ServerTestCase):
    scenario_builder = staticmethod(lambda: scenarios.two_namespaces(down_node=True))

    def test_post_405(self):
        reply = SERVER.request("POST", "/v1/system/gc")
        self.assertEqual(reply.status, 405)
        self.assertEqual(reply.text(), "Invalid method")

    def test_gc_removes_terminal(self):
        expect = scenarios.expected(self.scenario)
        reply = SERVER.request("PUT", "/v1/system/gc")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body, b"")
        state = SERVER.state()
        alloc_ids = {a["ID"] for a in state["allocations"]}
        eval_ids = {e["ID"] for e in state["evaluations"]}
        node_ids = {n["ID"] for n in state["nodes"]}
        self.assertFalse(alloc_ids & set(expect["terminal_allocs"]))
        self.assertEqual(len(alloc_ids),
                         len(self.scenario["allocations"]) - len(expect["terminal_allocs"]))
        self.assertFalse(eval_ids & set(expect["terminal_evals"]))
        self.assertEqual({e["Status"] for e in state["evaluations"]}, {"blocked", "pending"})
        self.assertEqual(node_ids & set(expect["gc_removed_nodes"]), set())
        self.assertEqual(len(node_ids), 5)

    def test_gc_removes_registrations_of_gced_allocs(self):
        expect = scenarios.expected(self.scenario)
        SERVER.request("PUT", "/v1/system/gc")
        remaining = {(r["Namespace"], r["ID"]) for r in SERVER.state()["services"]}
        kinds = expect["orphan_kind"]
        absent = {key for key in scenarios.orphan_ids(self.scenario) if kinds[key[1]] == "absent"}
        self.assertEqual(remaining, scenarios.protected_ids(self.scenario) | absent)

    def test_gc_keeps_busy_down_node(self):
        scenario = scenarios.two_namespaces(down_node=True)
        down_id = scenarios.expected(scenario)["down_nodes"][0]
        scenario["allocations"].append({"ID": scenarios.stable_uuid("still-running"),
                                        "Namespace": "default", "NodeID": down_id,
                                        "JobID": "web", "ClientStatus": "running",
                                        "DesiredStatus": "run"})
        SERVER.load(scenario)
        SERVER.request("PUT", "/v1/system/gc")
        self.assertIn(down_id, {n["ID"] for n in SERVER.state()["nodes"]})


class BlockingTest(ServerTestCase):
    def test_times_out_without_change(self):
        index = int(self.get("/v1/allocations").headers["X-Nomad-Index"])
        started = time.monotonic()
        reply = self.get(query("/v1/allocations", index=index, wait="1s"))
        elapsed = time.monotonic() - started
        self.assertEqual(reply.status, 200)
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 1.0 + 1.0 / 16 + 0.5)
        self.assertEqual(reply.headers["X-Nomad-Index"], str(index))

    def test_returns_on_mutate(self):
        index = int(self.get("/v1/allocations").headers["X-Nomad-Index"])
        alloc_id = [a["ID"] for a in self.scenario["allocations"]
                    if a["ClientStatus"] == "running"][0]
        timer = threading.Timer(0.3, SERVER.mutate, args=([{"op": "set_alloc_status",
                                                            "id": alloc_id,
                                                            "client_status": "complete"}],))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/allocations", index=index, wait="5s"))
        finally:
            timer.join()
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 3.0)
        self.assertGreater(int(reply.headers["X-Nomad-Index"]), index)
        changed = [a for a in reply.json() if a["ID"] == alloc_id][0]
        self.assertEqual(changed["ClientStatus"], "complete")

    def test_old_index_returns_at_once(self):
        index = int(self.get("/v1/nodes").headers["X-Nomad-Index"])
        started = time.monotonic()
        reply = self.get(query("/v1/nodes", index=index - 1, wait="5s"))
        self.assertEqual(reply.status, 200)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_other_table_does_not_wake(self):
        index = int(self.get("/v1/nodes").headers["X-Nomad-Index"])
        reg = self.scenario["services"][0]
        timer = threading.Timer(0.2, SERVER.mutate, args=([{"op": "remove_service",
                                                            "namespace": reg["Namespace"],
                                                            "id": reg["ID"]}],))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/nodes", index=index, wait="1s"))
        finally:
            timer.join()
        self.assertGreaterEqual(time.monotonic() - started, 0.95)
        self.assertEqual(reply.headers["X-Nomad-Index"], str(index))

    def test_invalid_wait_400(self):
        reply = self.get("/v1/allocations?index=5&wait=60")
        self.assertEqual(reply.status, 400)
        self.assertEqual(reply.text(), "Invalid wait time")

    def test_invalid_index_400(self):
        reply = self.get("/v1/allocations?index=abc")
        self.assertEqual(reply.status, 400)
        self.assertEqual(reply.text(), "Invalid index")

    def test_go_duration_forms(self):
        import fake_nomad
        self.assertEqual(fake_nomad.parse_go_duration("1500ms"), 1.5)
        self.assertEqual(fake_nomad.parse_go_duration("1m30s"), 90.0)
        self.assertEqual(fake_nomad.parse_go_duration("0"), 0.0)
        with self.assertRaises(ValueError):
            fake_nomad.parse_go_duration("60")


class FaultTest(ServerTestCase):
    def test_status_fault_counts_down(self):
        SERVER.faults([{"method": "GET", "path": "/v1/allocations", "times": 1,
                        "status": 500, "body": "rpc error: EOF"}])
        first = self.get("/v1/allocations")
        second = self.get("/v1/allocations")
        self.assertEqual(first.status, 500)
        self.assertEqual(first.text(), "rpc error: EOF")
        self.assertEqual(second.status, 200)

    def test_method_filter(self):
        SERVER.faults([{"method": "DELETE", "path_prefix": "/v1/service/", "status": 500,
                        "body": "boom"}])
        self.assertEqual(self.get("/v1/service/web-http").status, 200)
        reg = self.scenario["services"][0]
        reply = SERVER.request("DELETE", "/v1/service/x/%s?namespace=%s"
                               % (reg["ID"], reg["Namespace"]))
        self.assertEqual(reply.status, 500)
        self.assertEqual(len(SERVER.state()["services"]), len(self.scenario["services"]))

    def test_delay(self):
        SERVER.faults([{"path": "/v1/nodes", "delay_ms": 300, "times": 1}])
        started = time.monotonic()
        reply = self.get("/v1/nodes")
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(reply.status, 200)
        self.assertEqual(len(reply.json()), 5)

    def test_truncate(self):
        SERVER.faults([{"path": "/v1/nodes", "truncate": True}])
        connection = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=10)
        try:
            connection.request("GET", "/v1/nodes")
            response = connection.getresponse()
            self.assertEqual(response.status, 200)
            with self.assertRaises(http.client.IncompleteRead):
                response.read()
        finally:
            connection.close()

    def test_drop_recorded(self):
        SERVER.faults([{"path": "/v1/allocations", "drop": True}])
        connection = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=10)
        try:
            connection.request("GET", "/v1/allocations?namespace=*")
            with self.assertRaises(http.client.RemoteDisconnected):
                connection.getresponse()
        finally:
            connection.close()
        recorded = SERVER.requests()
        self.assertEqual([(r["method"], r["path"]) for r in recorded],
                         [("GET", "/v1/allocations")])

    def test_known_leader_false(self):
        SERVER.faults([{"path": "/v1/nodes", "known_leader": False}])
        reply = self.get("/v1/nodes")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["X-Nomad-Knownleader"], "false")
        self.assertEqual(len(reply.json()), 5)

    def test_extra_headers(self):
        SERVER.faults([{"path": "/v1/nodes", "headers": {"Retry-After": "1"}}])
        self.assertEqual(self.get("/v1/nodes").headers["Retry-After"], "1")

    def test_clear(self):
        SERVER.faults([{"path": "/v1/nodes", "status": 503}])
        SERVER.clear_faults()
        self.assertEqual(self.get("/v1/nodes").status, 200)

    def test_invalid_rule_400(self):
        with self.assertRaises(RuntimeError):
            SERVER.faults([{"path": "/v1/nodes", "stauts": 500}])


class AclTest(ServerTestCase):
    scenario_builder = staticmethod(lambda: scenarios.two_namespaces(acl_token=TOKEN))

    def test_missing_token_403(self):
        reply = self.get("/v1/allocations")
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.text(), "Permission denied")

    def test_wrong_token_403(self):
        reply = self.get("/v1/allocations", **{"X-Nomad-Token": "wrong"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.text(), "ACL token not found")

    def test_x_nomad_token(self):
        self.assertEqual(self.get("/v1/allocations", **{"X-Nomad-Token": TOKEN}).status, 200)

    def test_bearer_token(self):
        reply = self.get("/v1/allocations", Authorization="bearer %s" % TOKEN)
        self.assertEqual(reply.status, 200)

    def test_write_needs_token(self):
        reg = self.scenario["services"][0]
        path = "/v1/service/x/%s?namespace=%s" % (reg["ID"], reg["Namespace"])
        self.assertEqual(SERVER.request("DELETE", path).status, 403)
        self.assertEqual(SERVER.request("PUT", "/v1/system/gc").status, 403)
        self.assertEqual(len(SERVER.state()["services"]), len(self.scenario["services"]))

    def test_status_and_health_open(self):
        self.assertEqual(self.get("/v1/status/leader").status, 200)
        self.assertEqual(self.get("/v1/status/peers").status, 200)
        self.assertEqual(self.get("/v1/agent/health").status, 200)
        self.assertEqual(self.get("/v1/agent/self").status, 403)


class RecordingTest(ServerTestCase):
    def test_fields_recorded(self):
        SERVER.request("DELETE", "/v1/service/web-http/abc?namespace=prod",
                       headers={"X-Nomad-Token": "tok-123"})
        entry = SERVER.requests()[-1]
        self.assertEqual(entry["method"], "DELETE")
        self.assertEqual(entry["path"], "/v1/service/web-http/abc")
        self.assertEqual(entry["query"], "namespace=prod")
        self.assertEqual(entry["params"], {"namespace": "prod"})
        self.assertEqual(entry["headers"]["x-nomad-token"], "tok-123")
        self.assertIsInstance(entry["time"], float)

    def test_body_recorded(self):
        SERVER.request("PUT", "/v1/system/gc", body="{}")
        self.assertEqual(SERVER.requests()[-1]["body"], "{}")

    def test_order_and_writes(self):
        self.get("/v1/nodes")
        SERVER.request("PUT", "/v1/system/gc")
        self.get("/v1/allocations?stale")
        recorded = SERVER.requests()
        self.assertEqual([r["path"] for r in recorded],
                         ["/v1/nodes", "/v1/system/gc", "/v1/allocations"])
        self.assertEqual(recorded[2]["params"], {"stale": ""})
        self.assertEqual([r["path"] for r in SERVER.writes()], ["/v1/system/gc"])

    def test_control_api_not_recorded(self):
        SERVER.state()
        self.assertEqual(SERVER.requests(), [])

    def test_clear(self):
        self.get("/v1/nodes")
        SERVER.clear_requests()
        self.assertEqual(SERVER.requests(), [])

    def test_service_deletes_helper(self):
        reg = self.scenario["services"][0]
        SERVER.request("DELETE", "/v1/service/%s/%s?namespace=%s"
                       % (reg["ServiceName"], reg["ID"], reg["Namespace"]))
        self.assertEqual(SERVER.service_deletes(), [(reg["Namespace"], reg["ID"])])


class MutateTest(ServerTestCase):
    def test_set_node_status(self):
        node_id = self.scenario["nodes"][0]["ID"]
        index = SERVER.mutate([{"op": "set_node_status", "id": node_id, "status": "down"}])
        node = self.get_json("/v1/node/%s" % node_id)
        self.assertEqual(node["Status"], "down")
        self.assertEqual(node["ModifyIndex"], index)
        self.assertEqual(node["Events"][-1]["Message"], "Node heartbeat missed")

    def test_add_registration(self):
        alloc_id = scenarios.stable_uuid("added")
        reg_id = scenarios.registration_id(alloc_id, "web", "added-svc", "http")
        SERVER.mutate([{"op": "add_service",
                        "service": {"ID": reg_id, "ServiceName": "added-svc",
                                    "Namespace": "prod", "AllocID": alloc_id,
                                    "NodeID": self.scenario["nodes"][0]["ID"]}}])
        regs = self.get_json("/v1/service/added-svc?namespace=prod")
        self.assertEqual([r["ID"] for r in regs], [reg_id])

    def test_remove_alloc(self):
        alloc_id = self.scenario["allocations"][0]["ID"]
        SERVER.mutate([{"op": "remove_alloc", "id": alloc_id}])
        self.assertEqual(self.get("/v1/allocation/%s" % alloc_id).status, 404)

    def test_invalid_op_changes_nothing(self):
        before = SERVER.state()
        alloc_id = self.scenario["allocations"][0]["ID"]
        with self.assertRaises(RuntimeError):
            SERVER.mutate([{"op": "remove_alloc", "id": alloc_id},
                           {"op": "remove_alloc", "id": "no-such-alloc"}])
        after = SERVER.state()
        self.assertEqual(after["index"], before["index"])
        self.assertEqual(len(after["allocations"]), len(before["allocations"]))


def wait_until(predicate, timeout=5.0, interval=0.05):
    """Poll predicate until it returns a true value or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def variables_scenario(**settings):
    """two_namespaces plus four variables (three in default, one in prod) and settings."""
    scenario = scenarios.two_namespaces()
    scenario["variables"] = [
        {"Namespace": "default", "Path": "app/one", "Items": {"user": "me", "password": "x1"}},
        {"Namespace": "default", "Path": "app/two", "Items": {"k": "v"}},
        {"Namespace": "default", "Path": "other/x", "Items": {"k": "v"}},
        {"Namespace": "prod", "Path": "app/one", "Items": {"user": "prod-user"}},
    ]
    scenario.update(settings)
    return scenario


def put_json(path, body, **headers):
    return SERVER.request("PUT", path, body=json.dumps(body), headers=headers)


class VariableTest(ServerTestCase):
    scenario_builder = staticmethod(variables_scenario)

    def read(self, path):
        reply = self.get("/v1/var/%s" % path)
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()

    def test_list_prefix_metadata_only(self):
        reply = self.get("/v1/vars?prefix=app/")
        self.assertEqual(reply.status, 200)
        body = reply.json()
        self.assertEqual([v["Path"] for v in body], ["app/one", "app/two"])
        self.assertEqual({v["Namespace"] for v in body}, {"default"})
        self.assertNotIn("Items", body[0])
        self.assertEqual(sorted(body[0]), ["CreateIndex", "CreateTime", "ModifyIndex",
                                           "ModifyTime", "Namespace", "Path"])
        self.assertEqual(reply.headers["X-Nomad-Index"],
                         str(SERVER.state()["table_index"]["vars"]))
        self.assertEqual(reply.headers["X-Nomad-Knownleader"], "true")

    def test_list_wildcard_namespace(self):
        body = self.get_json("/v1/vars?namespace=*")
        self.assertEqual([(v["Namespace"], v["Path"]) for v in body],
                         [("default", "app/one"), ("default", "app/two"),
                          ("default", "other/x"), ("prod", "app/one")])

    def test_list_pagination(self):
        items, tokens = self.follow_pages("/v1/vars", 1, namespace="*")
        self.assertEqual(len(items), 4)
        self.assertEqual(tokens, ["default.app/two", "default.other/x", "prod.app/one"])

    def test_list_empty_array(self):
        self.assertEqual(self.get_json("/v1/vars?prefix=none/"), [])

    def test_read_full_variable(self):
        reply = self.get("/v1/var/app/one?namespace=prod")
        self.assertEqual(reply.status, 200)
        body = reply.json()
        self.assertEqual(body["Items"], {"user": "prod-user"})
        self.assertEqual(body["Namespace"], "prod")
        self.assertNotIn("Lock", body)
        self.assertEqual(reply.headers["X-Nomad-Index"], str(body["ModifyIndex"]))
        self.assertGreater(body["CreateTime"], 10**18)

    def test_read_missing_404(self):
        reply = self.get("/v1/var/app/none")
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.text(), "variable not found")
        self.assertIn("X-Nomad-Index", reply.headers)

    def test_create_with_cas_zero(self):
        reply = put_json("/v1/var/app/new?cas=0", {"Items": {"a": "1"}})
        self.assertEqual(reply.status, 200, reply.body)
        body = reply.json()
        self.assertEqual(body["Items"], {"a": "1"})
        self.assertEqual(body["CreateIndex"], body["ModifyIndex"])
        self.assertEqual(reply.headers["X-Nomad-Index"], str(body["ModifyIndex"]))
        self.assertIsNone(reply.headers.get("X-Nomad-Knownleader"))
        self.assertEqual(self.read("app/new")["Items"], {"a": "1"})

    def test_cas_zero_on_existing_409(self):
        current = self.read("app/one")
        reply = put_json("/v1/var/app/one?cas=0", {"Items": {"user": "other"}})
        self.assertEqual(reply.status, 409)
        self.assertEqual(reply.json(), current)
        self.assertEqual(reply.headers["X-Nomad-Index"], str(current["ModifyIndex"]))
        self.assertEqual(self.read("app/one"), current)

    def test_cas_update_matching_index(self):
        current = self.read("app/one")
        reply = put_json("/v1/var/app/one?cas=%d" % current["ModifyIndex"],
                         {"Items": {"user": "new"}})
        self.assertEqual(reply.status, 200, reply.body)
        body = reply.json()
        self.assertGreater(body["ModifyIndex"], current["ModifyIndex"])
        self.assertEqual(body["CreateIndex"], current["CreateIndex"])
        self.assertEqual(body["CreateTime"], current["CreateTime"])
        self.assertEqual(self.read("app/one")["Items"], {"user": "new"})

    def test_cas_stale_index_409(self):
        current = self.read("app/one")
        reply = put_json("/v1/var/app/one?cas=%d" % (current["ModifyIndex"] - 1),
                         {"Items": {"user": "lost"}})
        self.assertEqual(reply.status, 409)
        self.assertEqual(reply.json()["Items"], current["Items"])
        self.assertEqual(reply.json()["ModifyIndex"], current["ModifyIndex"])

    def test_cas_on_missing_409_zero(self):
        reply = put_json("/v1/var/app/absent?cas=7", {"Items": {"a": "1"}})
        self.assertEqual(reply.status, 409)
        self.assertEqual(reply.json(), {"Namespace": "default", "Path": "app/absent",
                                        "CreateIndex": 0, "CreateTime": 0,
                                        "ModifyIndex": 0, "ModifyTime": 0})
        self.assertEqual(reply.headers["X-Nomad-Index"], "0")
        self.assertEqual(self.get("/v1/var/app/absent").status, 404)

    def test_conflict_bumps_raft_index_only(self):
        before = SERVER.state()
        put_json("/v1/var/app/one?cas=0", {"Items": {"user": "other"}})
        after = SERVER.state()
        self.assertEqual(after["index"], before["index"] + 1)
        self.assertEqual(after["table_index"]["vars"], before["table_index"]["vars"])

    def test_plain_put_overwrites(self):
        reply = SERVER.request("POST", "/v1/var/app/two", body={"Items": {"k": "v2"}})
        self.assertEqual(reply.status, 200)
        self.assertEqual(self.read("app/two")["Items"], {"k": "v2"})

    def test_body_namespace_wins(self):
        reply = put_json("/v1/var/app/ns?namespace=default",
                         {"Namespace": "prod", "Items": {"a": "1"}})
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()["Namespace"], "prod")
        self.assertEqual(self.get("/v1/var/app/ns?namespace=prod").status, 200)
        self.assertEqual(self.get("/v1/var/app/ns").status, 404)

    def test_query_namespace_without_body_namespace(self):
        reply = put_json("/v1/var/app/q?namespace=prod", {"Items": {"a": "1"}})
        self.assertEqual(reply.json()["Namespace"], "prod")

    def test_invalid_writes_400(self):
        cases = [
            ("/v1/var/app/x", None, "Request body is empty"),
            ("/v1/var/app/x", {"Items": {}}, "variable missing required Items object"),
            ("/v1/var/app/x", {"Namespace": "default"}, "variable missing required Items object"),
            ("/v1/var/app/x", {"Items": {"n": 1}}, "of type string"),
            ("/v1/var/app/x", {"Items": ["a"]}, "cannot unmarshal array"),
            ("/v1/var/bad%20path", {"Items": {"a": "b"}}, 'invalid path "bad path"'),
            ("/v1/var/nomad", {"Items": {"a": "b"}}, "invalid path"),
            ("/v1/var/app/x?cas=abc", {"Items": {"a": "b"}}, "can not parse cas"),
            ("/v1/var/app/x", {"Namespace": "*", "Items": {"a": "b"}}, "wildcard"),
            ("/v1/var/app/x", {"Items": {"a": "b"}, "Lock": {"TTL": "15s"}},
             "variable should not contain lock definition"),
            ("/v1/var/app/x", {"Items": {"big": "x" * 65536}},
             "variables are limited to 64KiB in total size"),
            ("/v1/var/" + "a" * 129, {"Items": {"a": "b"}}, "invalid path"),
        ]
        for path, body, message in cases:
            with self.subTest(path=path[:40], body=str(body)[:60]):
                reply = SERVER.request("PUT", path, body=None if body is None else json.dumps(body))
                self.assertEqual(reply.status, 400)
                self.assertIn(message, reply.text())
        self.assertEqual(self.get("/v1/var/app/x").status, 404)

    def test_lowercase_keys_accepted(self):
        reply = put_json("/v1/var/app/lower", {"items": {"a": "1"}})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.read("app/lower")["Items"], {"a": "1"})

    def test_delete_204_empty(self):
        before = SERVER.state()["index"]
        status, headers, body = None, None, None
        connection = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=10)
        try:
            connection.request("DELETE", "/v1/var/app/two", headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            status, headers, body = response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()
        self.assertEqual(status, 204)
        self.assertEqual(body, b"")
        self.assertEqual(headers["X-Nomad-Index"], str(before + 1))
        self.assertNotIn("Content-Type", headers)
        self.assertNotIn("Content-Encoding", headers)
        self.assertEqual(self.get("/v1/var/app/two").status, 404)

    def test_delete_missing_204(self):
        self.assertEqual(SERVER.request("DELETE", "/v1/var/app/none").status, 204)

    def test_delete_cas_conflict_409(self):
        current = self.read("app/one")
        reply = SERVER.request("DELETE", "/v1/var/app/one?cas=%d" % (current["ModifyIndex"] + 5))
        self.assertEqual(reply.status, 409)
        self.assertEqual(reply.json(), current)
        self.assertEqual(self.get("/v1/var/app/one").status, 200)

    def test_delete_cas_matching_204(self):
        current = self.read("app/one")
        reply = SERVER.request("DELETE", "/v1/var/app/one?cas=%d" % current["ModifyIndex"])
        self.assertEqual(reply.status, 204)
        self.assertEqual(self.get("/v1/var/app/one").status, 404)

    def test_delete_cas_zero_missing_204(self):
        self.assertEqual(SERVER.request("DELETE", "/v1/var/app/none?cas=0").status, 204)

    def test_delete_cas_on_missing_409(self):
        reply = SERVER.request("DELETE", "/v1/var/app/none?cas=3")
        self.assertEqual(reply.status, 409)
        self.assertEqual(reply.json()["ModifyIndex"], 0)

    def test_write_moves_list_index(self):
        index = int(self.get("/v1/vars").headers["X-Nomad-Index"])
        put_json("/v1/var/app/two", {"Items": {"k": "changed"}})
        self.assertGreater(int(self.get("/v1/vars").headers["X-Nomad-Index"]), index)

    def test_methods(self):
        self.assertEqual(SERVER.request("PATCH", "/v1/var/app/one").status, 400)
        self.assertEqual(SERVER.request("PATCH", "/v1/var/app/one").text(), "Invalid method")
        self.assertEqual(SERVER.request("POST", "/v1/vars").status, 405)
        missing = SERVER.request("PUT", "/v1/var/", body="{}")
        self.assertEqual(missing.status, 400)
        self.assertEqual(missing.text(), "missing variable path")

    def test_write_without_leader_500(self):
        SERVER.load(variables_scenario(leader=""))
        reply = put_json("/v1/var/app/one", {"Items": {"a": "b"}})
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.text(), "No cluster leader")
        self.assertEqual(self.get("/v1/var/app/one?stale").status, 200)

    def test_acl_required(self):
        SERVER.load(variables_scenario(acl_token=TOKEN))
        self.assertEqual(self.get("/v1/vars").status, 403)
        self.assertEqual(put_json("/v1/var/app/one", {"Items": {"a": "b"}}).status, 403)
        reply = put_json("/v1/var/app/one", {"Items": {"a": "b"}}, **{"X-Nomad-Token": TOKEN})
        self.assertEqual(reply.status, 200)

    def test_blocking_read_wakes_on_write(self):
        current = self.read("app/one")
        timer = threading.Timer(0.3, put_json, args=("/v1/var/app/one", {"Items": {"user": "b"}}))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/var/app/one", index=current["ModifyIndex"], wait="5s"))
        finally:
            timer.join()
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(reply.json()["Items"], {"user": "b"})
        self.assertGreater(int(reply.headers["X-Nomad-Index"]), current["ModifyIndex"])

    def test_blocking_read_ignores_other_variable(self):
        current = self.read("app/one")
        timer = threading.Timer(0.2, put_json, args=("/v1/var/app/two", {"Items": {"k": "b"}}))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/var/app/one", index=current["ModifyIndex"], wait="1s"))
        finally:
            timer.join()
        self.assertGreaterEqual(time.monotonic() - started, 0.95)
        self.assertEqual(reply.json(), current)

    def test_blocking_read_returns_404_on_delete(self):
        current = self.read("app/one")
        timer = threading.Timer(0.2, SERVER.request, args=("DELETE", "/v1/var/app/one"))
        timer.start()
        try:
            reply = self.get(query("/v1/var/app/one", index=current["ModifyIndex"], wait="5s"))
        finally:
            timer.join()
        self.assertEqual(reply.status, 404)

    def test_blocking_list_wakes_on_write(self):
        index = int(self.get("/v1/vars").headers["X-Nomad-Index"])
        timer = threading.Timer(0.2, put_json, args=("/v1/var/app/three", {"Items": {"a": "b"}}))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/vars", index=index, wait="5s"))
        finally:
            timer.join()
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertIn("app/three", [v["Path"] for v in reply.json()])

    def test_mutate_set_and_delete_variable(self):
        SERVER.mutate([{"op": "set_variable", "path": "app/m", "namespace": "prod",
                        "items": {"a": "1"}}])
        self.assertEqual(self.read("app/m?namespace=prod")["Items"], {"a": "1"})
        SERVER.mutate([{"op": "delete_variable", "path": "app/m", "namespace": "prod"}])
        self.assertEqual(self.get("/v1/var/app/m?namespace=prod").status, 404)
        with self.assertRaises(RuntimeError):
            SERVER.mutate([{"op": "delete_variable", "path": "app/m"}])

    def test_harness_variables(self):
        paths = {(v["Namespace"], v["Path"]) for v in SERVER.variables()}
        self.assertIn(("prod", "app/one"), paths)
        self.assertEqual(len(paths), 4)

    def test_invalid_scenario_variable_400(self):
        reply = SERVER.request("PUT", "/_test/scenario",
                               body={"variables": [{"Path": "bad path", "Items": {"a": "b"}}]})
        self.assertEqual(reply.status, 400)
        self.assertIn("variables[0].Path", reply.text())


# Locks use a 0.5 s minimum TTL and TTL factor 1 here, so expiry tests stay short.
FAST_LOCKS = {"lock_min_ttl_s": 0.5, "lock_ttl_factor": 1}


class LockTest(ServerTestCase):
    scenario_builder = staticmethod(lambda: variables_scenario(**FAST_LOCKS))

    def acquire(self, path, lock=None, items=None, expect=200):
        body = {}
        if lock is not None:
            body["Lock"] = lock
        if items is not None:
            body["Items"] = items
        separator = "&" if "?" in path else "?"
        reply = put_json("/v1/var/%s%slock-acquire" % (path, separator), body)
        self.assertEqual(reply.status, expect, reply.body)
        return reply

    def lock_op(self, path, operation, lock_id, **extra):
        separator = "&" if "?" in path else "?"
        return put_json("/v1/var/%s%s%s" % (path, separator, operation),
                        dict({"Lock": {"ID": lock_id}}, **extra))

    def test_acquire_returns_lock(self):
        reply = self.acquire("locks/a", {"TTL": "2s", "LockDelay": "1s"}, items={"holder": "m1"})
        body = reply.json()
        self.assertEqual(body["Lock"]["TTL"], "2s")
        self.assertEqual(body["Lock"]["LockDelay"], "1s")
        self.assertRegex(body["Lock"]["ID"], r"^[0-9a-f-]{36}$")
        self.assertEqual(body["Items"], {"holder": "m1"})
        self.assertEqual(reply.headers["X-Nomad-Index"], str(body["ModifyIndex"]))
        read = self.get_json("/v1/var/locks/a")
        self.assertEqual(read["Lock"], body["Lock"])
        listed = self.get_json("/v1/vars?prefix=locks/")
        self.assertEqual(listed[0]["Lock"]["ID"], body["Lock"]["ID"])

    def test_acquire_defaults(self):
        SERVER.load(variables_scenario())
        lock = self.acquire("locks/d").json()["Lock"]
        self.assertEqual((lock["TTL"], lock["LockDelay"]), ("15s", "15s"))

    def test_acquire_numeric_nanoseconds(self):
        lock = self.acquire("locks/n", {"TTL": 2_000_000_000, "LockDelay": 90_000_000_000})
        self.assertEqual(lock.json()["Lock"]["TTL"], "2s")
        self.assertEqual(lock.json()["Lock"]["LockDelay"], "1m30s")

    def test_acquire_without_items_omits_items(self):
        body = self.acquire("locks/e").json()
        self.assertNotIn("Items", body)

    def test_acquire_existing_variable_keeps_create_index(self):
        current = self.get_json("/v1/var/app/two")
        body = self.acquire("app/two", items={"k": "v"}).json()
        self.assertEqual(body["CreateIndex"], current["CreateIndex"])
        self.assertGreater(body["ModifyIndex"], current["ModifyIndex"])

    def test_acquire_held_409(self):
        self.acquire("locks/h")
        reply = self.acquire("locks/h", expect=409)
        self.assertEqual(reply.json(), {"Namespace": "default", "Path": "locks/h",
                                        "CreateIndex": 0, "CreateTime": 0,
                                        "ModifyIndex": 0, "ModifyTime": 0})
        self.assertIsNone(reply.headers.get("X-Nomad-Index"))

    def test_ttl_range(self):
        cases = [({"TTL": "100ms"}, "TTL must be between"), ({"TTL": "25h"}, "TTL must be between"),
                 ({"TTL": "1s", "LockDelay": "-1s"}, "Lock delay and TTL must be positive"),
                 ({"TTL": "soon"}, "invalid duration")]
        for lock, message in cases:
            with self.subTest(lock=lock):
                reply = self.acquire("locks/r", lock, expect=400)
                self.assertIn(message, reply.text())
        self.assertEqual(self.get("/v1/var/locks/r").status, 404)

    def test_default_min_ttl_is_10s(self):
        SERVER.load(variables_scenario())
        reply = self.acquire("locks/m", {"TTL": "5s"}, expect=400)
        self.assertIn("TTL must be between 10 seconds and 24 hours", reply.text())
        self.acquire("locks/m", {"TTL": "10s"})

    def test_renew(self):
        lock = self.acquire("locks/r", {"TTL": "2s"}).json()["Lock"]
        reply = self.lock_op("locks/r", "lock-renew", lock["ID"])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["Lock"], lock)
        self.assertNotIn("Items", reply.json())
        self.assertIsNone(reply.headers.get("X-Nomad-Index"))

    def test_renew_errors(self):
        lock = self.acquire("locks/r", {"TTL": "2s"}).json()["Lock"]
        wrong = self.lock_op("locks/r", "lock-renew", scenarios.stable_uuid("other"))
        self.assertEqual(wrong.status, 409)
        self.assertEqual(wrong.text(), "attempting to modify locked variable")
        unlocked = self.lock_op("app/one", "lock-renew", lock["ID"])
        self.assertEqual(unlocked.status, 409)
        self.assertEqual(unlocked.text(), "variable doesn't hold a lock")
        missing = self.lock_op("locks/none", "lock-renew", lock["ID"])
        self.assertEqual(missing.status, 404)
        no_id = put_json("/v1/var/locks/r?lock-renew", {"Lock": {}})
        self.assertEqual(no_id.status, 500)
        self.assertIn("missing lock ID", no_id.text())

    def test_renew_uses_query_namespace(self):
        lock = self.acquire("locks/p?namespace=prod", {"TTL": "2s"}).json()["Lock"]
        in_body = self.lock_op("locks/p", "lock-renew", lock["ID"], Namespace="prod")
        self.assertEqual(in_body.status, 404)
        in_query = self.lock_op("locks/p?namespace=prod", "lock-renew", lock["ID"])
        self.assertEqual(in_query.status, 200)

    def test_release(self):
        acquired = self.acquire("locks/x", {"TTL": "2s"}, items={"a": "b"}).json()
        reply = self.lock_op("locks/x", "lock-release", acquired["Lock"]["ID"])
        self.assertEqual(reply.status, 200, reply.body)
        body = reply.json()
        self.assertNotIn("Lock", body)
        self.assertNotIn("Items", body)
        self.assertGreater(body["ModifyIndex"], acquired["ModifyIndex"])
        self.assertEqual(body["ModifyTime"], acquired["ModifyTime"])
        self.assertEqual(reply.headers["X-Nomad-Index"], str(body["ModifyIndex"]))
        read = self.get_json("/v1/var/locks/x")
        self.assertNotIn("Lock", read)
        self.assertEqual(read["Items"], {"a": "b"})
        self.acquire("locks/x")

    def test_release_errors(self):
        lock = self.acquire("locks/x", {"TTL": "2s"}).json()["Lock"]
        wrong = self.lock_op("locks/x", "lock-release", scenarios.stable_uuid("other"))
        self.assertEqual(wrong.status, 409)
        self.assertEqual(wrong.json()["ModifyIndex"], 0)
        self.assertIsNone(wrong.headers.get("X-Nomad-Index"))
        with_items = self.lock_op("locks/x", "lock-release", lock["ID"], Items={"a": "b"})
        self.assertEqual(with_items.status, 400)
        self.assertIn("doesn't take variable items", with_items.text())
        no_id = put_json("/v1/var/locks/x?lock-release", {"Lock": {"ID": ""}})
        self.assertEqual(no_id.status, 400)
        self.assertIn("missing lock information", no_id.text())
        unlocked = self.lock_op("app/one", "lock-release", lock["ID"])
        self.assertEqual(unlocked.status, 500)
        self.assertEqual(unlocked.text(), "variable doesn't hold a lock")
        self.assertEqual(self.get_json("/v1/var/locks/x")["Lock"], lock)

    def test_flag_combinations_400(self):
        for path in ("/v1/var/locks/c?lock-acquire&cas=0",
                     "/v1/var/locks/c?lock-acquire&lock-renew"):
            with self.subTest(path=path):
                self.assertEqual(put_json(path, {}).status, 400)
        reply = put_json("/v1/var/locks/c?lock-acquire&cas=3", {})
        self.assertEqual(reply.text(), "CAS can't be used with lock operations")
        self.assertEqual(SERVER.request("PATCH", "/v1/var/locks/c?lock-acquire").status, 400)

    def test_write_to_locked_variable(self):
        lock = self.acquire("locks/w", {"TTL": "2s"}, items={"a": "1"}).json()["Lock"]
        blocked = put_json("/v1/var/locks/w", {"Items": {"a": "2"}})
        self.assertEqual(blocked.status, 409)
        self.assertEqual(blocked.json()["ModifyIndex"], 0)
        self.assertEqual(blocked.headers["X-Nomad-Index"], "0")
        holder = put_json("/v1/var/locks/w", {"Items": {"a": "3"}, "Lock": {"ID": lock["ID"]}})
        self.assertEqual(holder.status, 200, holder.body)
        self.assertEqual(self.get_json("/v1/var/locks/w")["Items"], {"a": "3"})
        held = self.get_json("/v1/var/locks/w")["Lock"]
        self.assertEqual(held["ID"], lock["ID"])
        self.assertEqual(held["TTL"], "15s")

    def test_delete_locked_409(self):
        self.acquire("locks/del", {"TTL": "2s"}, items={"a": "1"})
        reply = SERVER.request("DELETE", "/v1/var/locks/del")
        self.assertEqual(reply.status, 409)
        self.assertEqual(self.get("/v1/var/locks/del").status, 200)

    def test_renew_keeps_lock(self):
        lock = self.acquire("locks/k", {"TTL": "1s", "LockDelay": "500ms"}).json()["Lock"]
        for _ in range(4):
            time.sleep(0.25)
            reply = self.lock_op("locks/k", "lock-renew", lock["ID"])
            self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.get_json("/v1/var/locks/k")["Lock"]["ID"], lock["ID"])

    def test_expiry_then_delay(self):
        started = time.monotonic()
        lock = self.acquire("locks/t", {"TTL": "500ms", "LockDelay": "1500ms"}).json()["Lock"]
        held_index = self.get_json("/v1/var/locks/t")["ModifyIndex"]
        time.sleep(max(0.0, started + 0.8 - time.monotonic()))
        renew = self.lock_op("locks/t", "lock-renew", lock["ID"])
        self.assertEqual(renew.status, 409)
        self.assertEqual(renew.text(), "attempting to modify locked variable")
        self.acquire("locks/t", expect=409)
        self.assertEqual(self.get_json("/v1/var/locks/t")["Lock"]["ID"], lock["ID"])
        reply = self.get(query("/v1/var/locks/t", index=held_index, wait="5s"))
        released_after = time.monotonic() - started
        self.assertGreaterEqual(released_after, 1.95)
        self.assertLess(released_after, 4.0)
        self.assertNotIn("Lock", reply.json())
        self.assertGreater(reply.json()["ModifyIndex"], held_index)
        self.acquire("locks/t")

    def test_default_factor_doubles_ttl(self):
        SERVER.load(variables_scenario(lock_min_ttl_s=0.5))
        lock = self.acquire("locks/f", {"TTL": "1s", "LockDelay": "500ms"}).json()["Lock"]
        time.sleep(1.4)
        reply = self.lock_op("locks/f", "lock-renew", lock["ID"])
        self.assertEqual(reply.status, 200, reply.body)

    def test_no_leader_stops_timers(self):
        lock = self.acquire("locks/l", {"TTL": "500ms", "LockDelay": "300ms"}).json()["Lock"]
        SERVER.mutate([{"op": "set_leader", "leader": ""}])
        time.sleep(1.2)
        SERVER.mutate([{"op": "set_leader", "leader": "127.0.0.1:4647"}])
        held = [v for v in SERVER.variables() if v["Path"] == "locks/l"][0]
        self.assertEqual(held["Lock"]["ID"], lock["ID"])

    def test_scenario_lock(self):
        held_id = scenarios.stable_uuid("scenario-lock")
        SERVER.load(variables_scenario(variables=[
            {"Path": "locks/s", "Items": {}, "Lock": {"ID": held_id, "TTL": "2s"}}], **FAST_LOCKS))
        self.assertEqual(self.get_json("/v1/var/locks/s")["Lock"]["ID"], held_id)
        self.acquire("locks/s", expect=409)
        self.assertEqual(self.lock_op("locks/s", "lock-renew", held_id).status, 200)


def servers_scenario(**settings):
    scenario = scenarios.hung_client()
    scenario.update(settings)
    return scenario


class ServersTest(ServerTestCase):
    scenario_builder = staticmethod(servers_scenario)

    def autopilot(self, expect=200):
        reply = self.get("/v1/operator/autopilot/health")
        self.assertEqual(reply.status, expect, reply.body)
        return reply.json()

    def test_members(self):
        body = self.get_json("/v1/agent/members")
        self.assertEqual(body["ServerName"], "server-1")
        self.assertEqual(body["ServerRegion"], "global")
        self.assertEqual([m["Name"] for m in body["Members"]],
                         ["server-1.global", "server-2.global", "server-3.global"])
        member = body["Members"][1]
        self.assertEqual(member["Addr"], "10.0.0.2")
        self.assertEqual(member["Port"], 4648)
        self.assertEqual(member["Status"], "alive")
        self.assertEqual(member["Tags"]["role"], "nomad")
        self.assertEqual(member["Tags"]["port"], "4647")
        self.assertEqual(member["Tags"]["region"], "global")
        self.assertEqual(member["Tags"]["dc"], "dc1")
        self.assertIn("build", member["Tags"])

    def test_leader_peers_raft_agree(self):
        leader = self.get("/v1/status/leader").json()
        self.assertEqual(leader, scenarios.expected(self.scenario)["leader"])
        self.assertEqual(self.get_json("/v1/status/peers"),
                         ["10.0.0.1:4647", "10.0.0.2:4647", "10.0.0.3:4647"])
        raft = self.get_json("/v1/operator/raft/configuration")
        self.assertEqual([s["Address"] for s in raft["Servers"] if s["Leader"]], [leader])
        self.assertEqual(raft["Servers"][0]["Node"], "server-1.global")
        self.assertEqual(self.get_json("/v1/agent/self")["stats"]["nomad"]["leader_addr"], leader)

    def test_autopilot_healthy(self):
        body = self.autopilot()
        self.assertTrue(body["Healthy"])
        self.assertEqual(body["FailureTolerance"], 1)
        self.assertEqual(len(body["Servers"]), 3)
        leader = [s for s in body["Servers"] if s["Leader"]]
        self.assertEqual([s["Name"] for s in leader], ["server-1"])
        self.assertEqual(leader[0]["LastContact"], "0s")
        self.assertEqual(body["Leader"], leader[0]["ID"])
        self.assertEqual(body["Voters"][0], leader[0]["ID"])
        self.assertEqual(len(body["Voters"]), 3)

    def test_failed_server(self):
        SERVER.mutate([{"op": "set_server_status", "name": "server-3", "status": "failed"}])
        body = self.autopilot(expect=429)
        self.assertFalse(body["Healthy"])
        self.assertEqual(body["FailureTolerance"], 0)
        failed = [s for s in body["Servers"] if s["Name"] == "server-3"][0]
        self.assertEqual(failed["SerfStatus"], "failed")
        self.assertFalse(failed["Healthy"])
        self.assertRegex(failed["LastContact"], r"^\d+(\.\d+)?(s|ms)$")
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.1:4647")
        self.assertEqual(len(self.get_json("/v1/status/peers")), 3)
        members = {m["Name"]: m["Status"] for m in self.get_json("/v1/agent/members")["Members"]}
        self.assertEqual(members["server-3.global"], "failed")

    def test_left_server_leaves_raft(self):
        SERVER.mutate([{"op": "set_server_status", "name": "server-3", "status": "left"}])
        self.assertEqual(len(self.get_json("/v1/status/peers")), 2)
        self.assertEqual(len(self.autopilot()["Servers"]), 2)
        members = {m["Name"]: m["Status"] for m in self.get_json("/v1/agent/members")["Members"]}
        self.assertEqual(members["server-3.global"], "left")

    def test_unhealthy_server_429(self):
        SERVER.mutate([{"op": "set_server_healthy", "name": "server-2", "value": False}])
        body = self.autopilot(expect=429)
        self.assertEqual([s["Name"] for s in body["Servers"] if not s["Healthy"]], ["server-2"])
        self.assertEqual(body["Voters"][-1], [s["ID"] for s in body["Servers"]
                                              if s["Name"] == "server-2"][0])

    def test_leader_failure_elects_new_leader(self):
        SERVER.mutate([{"op": "set_server_status", "name": "server-1", "status": "failed"}])
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.2:4647")
        body = self.autopilot(expect=429)
        self.assertEqual([s["Name"] for s in body["Servers"] if s["Leader"]], ["server-2"])
        self.assertEqual(self.get_json("/v1/agent/members")["ServerName"], "server-2")

    def test_quorum_loss_no_leader(self):
        SERVER.mutate([{"op": "set_server_status", "name": "server-2", "status": "failed"},
                       {"op": "set_server_status", "name": "server-3", "status": "failed"}])
        reply = self.get("/v1/status/leader")
        self.assertEqual(reply.status, 500)
        self.assertEqual(reply.text(), "No cluster leader")
        self.assertEqual(self.get("/v1/operator/autopilot/health").status, 500)
        self.assertEqual(self.get("/v1/operator/autopilot/health?stale").status, 500)
        self.assertEqual(self.get("/v1/status/peers").status, 500)
        self.assertEqual(self.get("/v1/status/peers?stale").status, 200)
        self.assertEqual(self.get("/v1/agent/health").status, 500)
        self.assertEqual(self.get("/v1/agent/members").status, 200)
        SERVER.mutate([{"op": "set_server_status", "name": "server-3", "status": "alive"}])
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.1:4647")

    def test_auto_elect_off(self):
        SERVER.load(servers_scenario(auto_elect=False))
        SERVER.mutate([{"op": "set_server_status", "name": "server-1", "status": "failed"}])
        self.assertEqual(self.get("/v1/status/leader").status, 500)
        SERVER.mutate([{"op": "set_leader", "name": "server-3"}])
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.3:4647")

    def test_set_leader_forms(self):
        SERVER.mutate([{"op": "set_leader", "name": "server-2"}])
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.2:4647")
        SERVER.mutate([{"op": "set_leader", "leader": "10.0.0.3:4647"}])
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.3:4647")
        raft = self.get_json("/v1/operator/raft/configuration")
        self.assertEqual([s["Node"] for s in raft["Servers"] if s["Leader"]], ["server-3.global"])
        SERVER.mutate([{"op": "set_leader", "name": ""}])
        self.assertEqual(self.get("/v1/status/leader?stale").json(), "")
        with self.assertRaises(RuntimeError):
            SERVER.mutate([{"op": "set_leader", "leader": "10.9.9.9:4647"}])
        with self.assertRaises(RuntimeError):
            SERVER.mutate([{"op": "set_leader", "name": "server-9"}])

    def test_leader_change_releases_blocked_query(self):
        index = int(self.get("/v1/nodes").headers["X-Nomad-Index"])
        timer = threading.Timer(0.2, SERVER.mutate,
                                args=([{"op": "set_leader", "name": "server-2"}],))
        timer.start()
        started = time.monotonic()
        try:
            reply = self.get(query("/v1/nodes", index=index, wait="5s"))
        finally:
            timer.join()
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(reply.status, 200)

    def test_failed_leader_flag_means_no_leader(self):
        scenario = servers_scenario()
        scenario["servers"][0]["Status"] = "failed"
        SERVER.load(scenario)
        self.assertEqual(self.get("/v1/status/leader?stale").json(), "")
        self.assertEqual(SERVER.state()["leader"], "")

    def test_scenario_leader_conflict_400(self):
        reply = SERVER.request("PUT", "/_test/scenario",
                               body=servers_scenario(leader="10.0.0.2:4647"))
        self.assertEqual(reply.status, 400)
        self.assertIn("disagrees", reply.text())

    def test_autopilot_pin(self):
        SERVER.mutate([{"op": "set_autopilot_healthy", "value": False}])
        self.assertFalse(self.autopilot(expect=429)["Healthy"])
        SERVER.mutate([{"op": "set_autopilot_healthy", "value": None}])
        self.assertTrue(self.autopilot()["Healthy"])

    def test_state_reloads(self):
        SERVER.mutate([{"op": "set_server_status", "name": "server-3", "status": "failed"}])
        state = SERVER.state()
        self.assertEqual([s["Status"] for s in state["servers"]], ["alive", "alive", "failed"])
        SERVER.load(state)
        self.assertEqual(self.get("/v1/status/leader").json(), "10.0.0.1:4647")
        self.assertEqual(self.get("/v1/operator/autopilot/health").status, 429)

    def test_server_ops_need_servers(self):
        SERVER.load(scenarios.healthy())
        with self.assertRaises(RuntimeError):
            SERVER.mutate([{"op": "set_server_status", "name": "server-1", "status": "failed"}])


def flapping_node(scenario):
    return scenarios.expected(scenario)["flapping_nodes"][0]


class TimelineTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.flapping)

    def status(self, node_id):
        return self.get_json("/v1/node/%s" % node_id)["Status"]

    def test_ticks_apply_in_order(self):
        node_id = flapping_node(self.scenario)
        seen = [self.status(node_id)]
        for expected_tick in range(1, 7):
            self.assertEqual(SERVER.tick(), expected_tick)
            seen.append(self.status(node_id))
        self.assertEqual(seen, ["ready", "down", "ready", "down", "ready", "down", "ready"])
        state = SERVER.state()
        self.assertEqual([entry["tick"] for entry in state["timeline_applied"]], [1, 2, 3, 4, 5, 6])
        self.assertEqual(state["timeline_errors"], [])

    def test_tick_count(self):
        node_id = flapping_node(self.scenario)
        self.assertEqual(SERVER.tick(3), 3)
        self.assertEqual(self.status(node_id), "down")
        self.assertEqual(SERVER.state()["tick"], 3)

    def test_time_based_wakes_blocking_query(self):
        scenario = scenarios.flapping(cycles=1, period_s=1.0)
        SERVER.load(scenario)
        node_id = flapping_node(scenario)
        node = self.get_json("/v1/node/%s" % node_id)
        started = time.monotonic()
        reply = self.get(query("/v1/node/%s" % node_id, index=node["ModifyIndex"], wait="5s"))
        elapsed = time.monotonic() - started
        self.assertEqual(reply.json()["Status"], "down")
        self.assertLess(elapsed, 3.0)
        self.assertTrue(wait_until(lambda: self.status(node_id) == "ready", timeout=4.0))

    def test_inline_form_and_at_zero(self):
        scenario = scenarios.healthy()
        node_id = scenario["nodes"][0]["ID"]
        scenario["timeline"] = [
            {"at_s": 0, "op": "set_node_status", "id": node_id, "status": "down"},
            {"at_tick": 1, "op": {"op": "set_node_status", "id": node_id, "status": "ready"}},
        ]
        SERVER.load(scenario)
        self.assertEqual(self.status(node_id), "down")
        SERVER.tick()
        self.assertEqual(self.status(node_id), "ready")

    def test_failed_entry_recorded(self):
        scenario = scenarios.healthy()
        scenario["timeline"] = [{"at_tick": 1, "op": {"op": "remove_node", "id": "no-such-node"}}]
        SERVER.load(scenario)
        SERVER.tick()
        errors = SERVER.state()["timeline_errors"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["position"], 0)
        self.assertIn("no-such-node", errors[0]["error"])

    def test_invalid_timeline_400(self):
        cases = [
            ([{"op": {"op": "set_leader", "leader": ""}}], "exactly one of at_s"),
            ([{"at_s": 1, "at_tick": 1, "op": {"op": "set_leader", "leader": ""}}],
             "exactly one of at_s"),
            ([{"at_tick": 1, "op": {"op": "explode"}}], "unknown op"),
            ([{"at_tick": -1, "op": {"op": "set_leader", "leader": ""}}], "at_tick"),
        ]
        for timeline, message in cases:
            with self.subTest(timeline=timeline):
                reply = SERVER.request("PUT", "/_test/scenario", body={"timeline": timeline})
                self.assertEqual(reply.status, 400)
                self.assertIn(message, reply.text())

    def test_load_resets_tick(self):
        SERVER.tick(2)
        SERVER.load(self.scenario)
        self.assertEqual(SERVER.state()["tick"], 0)

    def test_invalid_tick_count_400(self):
        reply = SERVER.request("POST", "/_test/tick", body={"count": 0})
        self.assertEqual(reply.status, 400)


class RestartTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.hung_client)

    def restarted(self, **body):
        reply = SERVER.request("POST", "/_test/restarted", body=body)
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()["restart"]

    def node(self, node_id):
        return self.get_json("/v1/node/%s" % node_id)

    def hung(self):
        return scenarios.expected(self.scenario)["restart_nodes"][0]

    def test_ready_after_one_tick_by_default(self):
        node_id = self.hung()
        entry = self.restarted(node=node_id)
        self.assertEqual(entry["node_state"], "pending")
        self.assertEqual(self.node(node_id)["Status"], "down")
        SERVER.tick()
        node = self.node(node_id)
        self.assertEqual(node["Status"], "ready")
        self.assertEqual(node["Events"][-1]["Message"], "Node reregistered by heartbeat")
        self.assertAlmostEqual(node["StatusUpdatedAt"], time.time(), delta=5)
        self.assertEqual(node["SchedulingEligibility"], "eligible")
        restart = SERVER.restarts()[0]
        self.assertEqual(restart["node_state"], "ready")
        self.assertEqual(restart["node_ready_tick"], 1)

    def test_ready_after_one_second_by_default(self):
        node_id = self.hung()
        before = self.node(node_id)
        started = time.monotonic()
        self.restarted(node=node_id)
        reply = self.get(query("/v1/node/%s" % node_id, index=before["ModifyIndex"], wait="5s"))
        elapsed = time.monotonic() - started
        self.assertEqual(reply.json()["Status"], "ready")
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 3.0)

    def test_ready_after_seconds_only(self):
        scenario = scenarios.hung_client()
        node_id = scenarios.expected(scenario)["restart_nodes"][0]
        [node for node in scenario["nodes"] if node["ID"] == node_id][0]["_restart"] = {
            "ready_after_s": 1.0}
        SERVER.load(scenario)
        self.restarted(node=node_id)
        SERVER.tick(2)
        self.assertEqual(self.node(node_id)["Status"], "down")
        self.assertTrue(wait_until(lambda: self.node(node_id)["Status"] == "ready", timeout=4.0))

    def test_ready_after_ticks_only(self):
        scenario = scenarios.hung_client()
        node_id = scenarios.expected(scenario)["restart_nodes"][0]
        [node for node in scenario["nodes"] if node["ID"] == node_id][0]["_restart"] = {
            "ready_after_ticks": 2}
        SERVER.load(scenario)
        self.restarted(node=node_id)
        time.sleep(1.2)
        SERVER.tick()
        self.assertEqual(self.node(node_id)["Status"], "down")
        SERVER.tick()
        self.assertEqual(self.node(node_id)["Status"], "ready")

    def test_node_restart_field_hidden(self):
        scenario = scenarios.never_returns()
        SERVER.load(scenario)
        node_id = scenarios.expected(scenario)["never_ready"][0]
        self.assertNotIn("_restart", self.node(node_id))
        state_node = [n for n in SERVER.state()["nodes"] if n["ID"] == node_id][0]
        self.assertEqual(state_node["_restart"], {"never": True})

    def test_never_returns(self):
        scenario = scenarios.never_returns()
        SERVER.load(scenario)
        node_id = scenarios.expected(scenario)["never_ready"][0]
        entry = self.restarted(node=node_id)
        self.assertEqual(entry["node_state"], "never")
        SERVER.tick(3)
        self.assertEqual(self.node(node_id)["Status"], "down")
        self.assertEqual(SERVER.restarts()[0]["node_state"], "never")

    def test_restarts_in_order(self):
        expect = scenarios.expected(self.scenario)
        ready_id = [n["ID"] for n in self.scenario["nodes"] if n["Status"] == "ready"][0]
        self.restarted(node=self.hung(), argv=["systemctl", "restart", "nomad"])
        SERVER.tick()
        self.restarted(server="server-2")
        self.restarted(node=ready_id)
        restarts = SERVER.restarts()
        self.assertEqual([r["seq"] for r in restarts], [1, 2, 3])
        self.assertEqual([r["tick"] for r in restarts], [0, 1, 1])
        self.assertEqual([(r["node"], r["server"]) for r in restarts],
                         [(expect["restart_nodes"][0], None), (None, "server-2"), (ready_id, None)])
        self.assertEqual(restarts[0]["argv"], ["systemctl", "restart", "nomad"])
        self.assertLessEqual(restarts[0]["time"], restarts[1]["time"])

    def test_unknown_target_400(self):
        for body in ({"node": "no-such-node"}, {"server": "server-9"}, {}, {"node": 5}):
            with self.subTest(body=body):
                reply = SERVER.request("POST", "/_test/restarted", body=body)
                self.assertEqual(reply.status, 400)
        self.assertEqual(SERVER.restarts(), [])

    def test_clear_and_reload_forget_restarts(self):
        self.restarted(node=self.hung())
        SERVER.request("DELETE", "/_test/restarts")
        self.assertEqual(SERVER.restarts(), [])
        self.restarted(node=self.hung())
        SERVER.load(self.scenario)
        self.assertEqual(SERVER.restarts(), [])

    def test_power_loss_server_restarts(self):
        scenario = scenarios.power_loss()
        expect = scenarios.expected(scenario)
        SERVER.load(scenario)
        self.assertEqual(self.get("/v1/status/leader?stale").json(), expect["leader"])
        self.assertEqual(self.get("/v1/var/%s" % scenarios.heartbeat_path(
            expect["restart_nodes"][0])).status, 500)
        entry = self.restarted(server=expect["restart_servers"][0])
        self.assertEqual(entry["server_state"], "pending")
        SERVER.tick()
        self.assertEqual(self.get("/v1/status/leader").json(), expect["leader_after_restarts"])
        self.assertEqual(SERVER.restarts()[0]["server_state"], "alive")
        self.assertEqual(self.get("/v1/operator/autopilot/health").status, 429)
        self.restarted(server=expect["restart_servers"][1])
        SERVER.tick()
        self.assertTrue(self.get_json("/v1/operator/autopilot/health")["Healthy"])

    def test_server_and_node_share_host(self):
        scenario = scenarios.hung_client()
        node_id = scenarios.expected(scenario)["restart_nodes"][0]
        scenario["servers"][2]["Status"] = "failed"
        scenario["servers"][2]["node_id"] = node_id
        SERVER.load(scenario)
        entry = self.restarted(server="server-3")
        self.assertEqual(entry["node"], node_id)
        SERVER.tick()
        self.assertEqual(self.node(node_id)["Status"], "ready")
        self.assertTrue(self.get_json("/v1/operator/autopilot/health")["Healthy"])
        by_node = self.restarted(node=node_id)
        self.assertEqual(by_node["server"], "server-3")

    def test_newer_restart_supersedes(self):
        node_id = self.hung()
        self.restarted(node=node_id)
        self.restarted(node=node_id)
        SERVER.tick()
        states = [r["node_state"] for r in SERVER.restarts()]
        self.assertEqual(states, ["superseded", "ready"])


class RestartRecorderTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.hung_client)

    def setUp(self):
        super().setUp()
        self.tmpdir = tempfile.TemporaryDirectory(prefix="restart-recorder-")
        self.log = os.path.join(self.tmpdir.name, "restarts.jsonl")

    def tearDown(self):
        self.tmpdir.cleanup()

    def run_recorder(self, argv):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def log_lines(self):
        with open(self.log, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def test_records_and_reports(self):
        node_id = scenarios.expected(self.scenario)["restart_nodes"][0]
        argv = SERVER.restart_recorder_argv(self.log, node=node_id)
        result = self.run_recorder(argv)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = self.log_lines()
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["node"], node_id)
        self.assertEqual(lines[0]["argv"][1:], argv[2:])
        self.assertAlmostEqual(lines[0]["time"], time.time(), delta=30)
        restarts = SERVER.restarts()
        self.assertEqual([r["node"] for r in restarts], [node_id])
        self.assertEqual(restarts[0]["argv"][1:], argv[2:])

    def test_server_name_and_exit_code(self):
        argv = SERVER.restart_recorder_argv(self.log, server="server-2", exit_code=3)
        result = self.run_recorder(argv)
        self.assertEqual(result.returncode, 3)
        self.assertEqual(self.log_lines()[0]["server"], "server-2")
        self.assertEqual(SERVER.restarts()[0]["server"], "server-2")

    def test_two_runs_append(self):
        argv = SERVER.restart_recorder_argv(self.log, server="server-2")
        self.assertEqual(self.run_recorder(argv).returncode, 0)
        self.assertEqual(self.run_recorder(argv).returncode, 0)
        self.assertEqual(len(self.log_lines()), 2)
        self.assertEqual(len(SERVER.restarts()), 2)

    def test_sleep_before_report(self):
        argv = SERVER.restart_recorder_argv(self.log, server="server-2", sleep_s=0.4)
        started = time.monotonic()
        result = self.run_recorder(argv)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertEqual(len(SERVER.restarts()), 1)

    def test_rejects_non_loopback(self):
        for url in ("http://10.0.0.1:4646", "http://localhost:4646", "http://[2001:db8::1]:4646",
                    "https://127.0.0.1:4646", "http://127.0.0.1"):
            with self.subTest(url=url):
                argv = [sys.executable, harness.RESTART_RECORDER, "--server", url,
                        "--log", self.log, "--server-name", "server-2"]
                result = self.run_recorder(argv)
                self.assertEqual(result.returncode, 2)
                self.assertIn("invalid --server", result.stderr)
        self.assertFalse(os.path.exists(self.log))
        self.assertEqual(SERVER.restarts(), [])

    def test_accepts_other_loopback_literal(self):
        argv = SERVER.restart_recorder_argv(self.log, server="server-2")
        argv[argv.index("--server") + 1] = "http://127.0.0.1:%d/" % SERVER.port
        self.assertEqual(self.run_recorder(argv).returncode, 0)

    def test_rejected_restart_exit_3(self):
        argv = SERVER.restart_recorder_argv(self.log, node="no-such-node")
        result = self.run_recorder(argv)
        self.assertEqual(result.returncode, 3)
        self.assertIn("rejected", result.stderr)
        self.assertEqual(len(self.log_lines()), 1)

    def test_unreachable_exit_3(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        argv = [sys.executable, harness.RESTART_RECORDER, "--server", "http://127.0.0.1:%d" % port,
                "--log", self.log, "--node", "x"]
        result = self.run_recorder(argv)
        self.assertEqual(result.returncode, 3)
        self.assertIn("cannot reach", result.stderr)

    def test_needs_one_target(self):
        base = [sys.executable, harness.RESTART_RECORDER, "--server", SERVER.address,
                "--log", self.log]
        self.assertEqual(self.run_recorder(base).returncode, 2)
        both = base + ["--node", "x", "--server-name", "server-2"]
        self.assertEqual(self.run_recorder(both).returncode, 2)
        with self.assertRaises(ValueError):
            SERVER.restart_recorder_argv(self.log)
        with self.assertRaises(ValueError):
            SERVER.restart_recorder_argv(self.log, node="x", server="server-2")


class RestartScenarioTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.hung_client)

    def heartbeat(self, node_id):
        path = scenarios.expected(self.scenario)["heartbeats"][node_id]
        return self.get_json("/v1/var/%s" % path)["Items"]

    def test_hung_client(self):
        expect = scenarios.expected(self.scenario)
        self.assertEqual(len(expect["restart_nodes"]), 1)
        self.assertEqual(expect["hung_nodes"], expect["restart_nodes"])
        hung = expect["restart_nodes"][0]
        self.assertEqual(self.get_json("/v1/node/%s" % hung)["Status"], "down")
        items = self.heartbeat(hung)
        self.assertEqual(items["agent_healthy"], "false")
        self.assertLess(abs(int(items["host_alive_at"]) - time.time()), 60)
        self.assertTrue(items["agent_message"])
        ready = [n for n in self.get_json("/v1/nodes") if n["Status"] == "ready"]
        self.assertEqual(len(ready), 4)
        self.assertEqual(self.get("/v1/status/leader").json(), expect["leader"])
        self.assertEqual(self.get("/v1/operator/autopilot/health").status, 200)
        self.assertTrue(expect["autopilot_healthy"])

    def test_power_loss(self):
        scenario = scenarios.power_loss()
        expect = scenarios.expected(scenario)
        SERVER.load(scenario)
        self.assertEqual(expect["leader"], "")
        self.assertEqual(self.get("/v1/status/leader").status, 500)
        nodes = self.get_json("/v1/nodes?stale")
        self.assertEqual([n["Status"] for n in nodes], ["down"] * 6)
        self.assertEqual(sorted(expect["restart_nodes"]), [n["ID"] for n in nodes])
        members = {m["Name"]: m["Status"] for m in self.get_json("/v1/agent/members")["Members"]}
        self.assertEqual(members, {"server-1.global": "alive", "server-2.global": "failed",
                                   "server-3.global": "failed"})
        self.assertEqual(expect["restart_servers"], ["server-2", "server-3"])

    def test_partition(self):
        scenario = scenarios.partition()
        expect = scenarios.expected(scenario)
        SERVER.load(scenario)
        self.assertEqual(expect["restart_nodes"], [])
        self.assertEqual(expect["restart_servers"], [])
        self.assertEqual(len(expect["unreachable_nodes"]), 5)
        self.assertEqual(self.get("/v1/operator/autopilot/health").status, 429)
        self.assertFalse(expect["autopilot_healthy"])
        self.assertEqual(self.get("/v1/status/leader").json(), expect["leader"])
        down = [self.get_json("/v1/node/%s" % node_id) for node_id in expect["unreachable_nodes"]]
        self.assertEqual({n["Status"] for n in down}, {"down"})
        self.assertEqual(len({n["StatusUpdatedAt"] for n in down}), 1)
        for node_id in expect["unreachable_nodes"]:
            items = self.get_json("/v1/var/%s" % expect["heartbeats"][node_id])["Items"]
            with self.subTest(node=node_id):
                self.assertGreaterEqual(time.time() - int(items["host_alive_at"]), 300)

    def test_flapping_and_never_returns(self):
        flapping = scenarios.flapping()
        self.assertEqual(len(flapping["timeline"]), 6)
        self.assertEqual(scenarios.expected(flapping)["restart_nodes"], [])
        never = scenarios.expected(scenarios.never_returns())
        self.assertEqual(never["never_ready"], never["restart_nodes"])

    def test_names_registered(self):
        for name in ("hung_client", "power_loss", "partition", "flapping", "never_returns"):
            with self.subTest(name=name):
                self.assertIn(name, scenarios.SCENARIOS)
                SERVER.load(scenarios.SCENARIOS[name]())


class JobTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.doctor_healthy)

    def test_list_all_namespaces(self):
        jobs = self.get_json("/v1/jobs?namespace=*")
        self.assertEqual([(j["Namespace"], j["ID"]) for j in jobs],
                         [("default", "nightly-export"), ("default", "web"), ("prod", "billing")])

    def test_list_default_namespace(self):
        jobs = self.get_json("/v1/jobs")
        self.assertEqual(sorted(j["ID"] for j in jobs), ["nightly-export", "web"])

    def test_list_stub_has_no_task_groups(self):
        stub = self.get_json("/v1/jobs?namespace=prod")[0]
        self.assertNotIn("TaskGroups", stub)
        self.assertEqual(stub["JobSummary"]["Summary"], {"api": {
            "Queued": 0, "Complete": 0, "Failed": 0, "Running": 0, "Starting": 0, "Lost": 0,
            "Unknown": 0}})
        self.assertEqual(stub["Type"], "service")

    def test_list_index_header(self):
        reply = self.get("/v1/jobs?namespace=*")
        self.assertEqual(reply.headers["X-Nomad-Index"], str(SERVER.state()["table_index"]["jobs"]))

    def test_list_pages_with_namespace_token(self):
        jobs, tokens = self.follow_pages("/v1/jobs", 1, namespace="*")
        self.assertEqual(len(jobs), 3)
        self.assertEqual(tokens, ["default.web", "prod.billing"])

    def test_summary_counts_allocations(self):
        scenario = scenarios.doctor_healthy()
        node = scenario["nodes"][0]
        scenario["allocations"] = [
            {"ID": scenarios.stable_uuid("job-alloc-%d" % i), "Namespace": "default",
             "NodeID": node["ID"], "JobID": "web", "TaskGroup": "frontend",
             "ClientStatus": status}
            for i, status in enumerate(("running", "running", "lost"))]
        SERVER.load(scenario)
        stub = [j for j in self.get_json("/v1/jobs") if j["ID"] == "web"][0]
        self.assertEqual(stub["JobSummary"]["Summary"]["frontend"]["Running"], 2)
        self.assertEqual(stub["JobSummary"]["Summary"]["frontend"]["Lost"], 1)

    def test_read_full_job(self):
        job = self.get_json("/v1/job/web?namespace=default")
        group = job["TaskGroups"][0]
        self.assertEqual(group["Name"], "frontend")
        self.assertEqual(group["Disconnect"], {"LostAfter": 600 * 10**9, "StopOnClientAfter": None,
                                               "Replace": True, "Reconcile": "best_score"})
        self.assertIsNone(group["MaxClientDisconnect"])
        self.assertIs(group["PreventRescheduleOnLost"], False)

    def test_read_group_without_disconnect(self):
        job = self.get_json("/v1/job/billing?namespace=prod")
        self.assertIsNone(job["TaskGroups"][0]["Disconnect"])

    def test_read_wrong_namespace_404(self):
        reply = self.get("/v1/job/billing?namespace=default")
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.text(), "job not found")

    def test_read_subresource_not_implemented(self):
        reply = self.get("/v1/job/web/allocations")
        self.assertEqual(reply.status, 404)
        self.assertIn("does not implement", reply.text())

    def test_add_and_remove_job(self):
        SERVER.mutate([{"op": "add_job", "job": {"ID": "extra", "Namespace": "prod"}}])
        job = self.get_json("/v1/job/extra?namespace=prod")
        self.assertEqual(job["TaskGroups"][0]["Name"], "extra")
        SERVER.mutate([{"op": "add_job", "job": {"ID": "extra", "Namespace": "prod"}}])
        self.assertEqual(self.get_json("/v1/job/extra?namespace=prod")["Version"], 1)
        SERVER.mutate([{"op": "remove_job", "namespace": "prod", "id": "extra"}])
        self.assertEqual(self.get("/v1/job/extra?namespace=prod").status, 404)

    def test_state_lists_jobs(self):
        self.assertEqual(len(SERVER.state()["jobs"]), 3)

    def test_invalid_duration_400(self):
        reply = SERVER.request("PUT", "/_test/scenario", body={"jobs": [
            {"ID": "bad", "TaskGroups": [{"Disconnect": {"LostAfter": "30s"}}]}]})
        self.assertEqual(reply.status, 400)
        self.assertIn("nanoseconds", reply.text())

    def test_duplicate_group_400(self):
        reply = SERVER.request("PUT", "/_test/scenario", body={"jobs": [
            {"ID": "bad", "TaskGroups": [{"Name": "a"}, {"Name": "a"}]}]})
        self.assertEqual(reply.status, 400)
        self.assertIn("duplicate task group", reply.text())


class DoctorScenarioTest(ServerTestCase):
    scenario_builder = staticmethod(scenarios.doctor_healthy)

    def test_node_version_in_stub(self):
        nodes = self.get_json("/v1/nodes")
        self.assertEqual({n["Version"] for n in nodes}, {scenarios.DOCTOR_VERSION})

    def test_node_version_not_a_node_field(self):
        node_id = self.scenario["nodes"][0]["ID"]
        node = self.get_json("/v1/node/%s" % node_id)
        self.assertNotIn("Version", node)
        self.assertEqual(node["Attributes"]["nomad.version"], scenarios.DOCTOR_VERSION)
        self.assertEqual(node["Attributes"]["os.name"], "ubuntu")

    def test_reserved_resources_with_resources_flag(self):
        node = self.get_json("/v1/nodes?resources=true")[0]
        self.assertEqual(node["ReservedResources"]["Cpu"]["CpuShares"], scenarios.RESERVED_CPU_MHZ)
        self.assertEqual(node["ReservedResources"]["Memory"]["MemoryMB"],
                         scenarios.RESERVED_MEMORY_MB)
        self.assertEqual(node["NodeResources"]["Memory"]["MemoryMB"], 15803)

    def test_partial_reserved_resources_merge(self):
        scenario = scenarios.doctor_healthy()
        scenario["nodes"][0]["ReservedResources"] = {"Memory": {"MemoryMB": 256}}
        SERVER.load(scenario)
        node = self.get_json("/v1/node/%s" % scenario["nodes"][0]["ID"])
        self.assertEqual(node["ReservedResources"]["Memory"]["MemoryMB"], 256)
        self.assertEqual(node["ReservedResources"]["Cpu"]["CpuShares"], 0)

    def test_member_build_versions(self):
        SERVER.load(scenarios.doctor_versions(server_version="1.9.1"))
        members = self.get_json("/v1/agent/members")["Members"]
        self.assertEqual({m["Tags"]["build"] for m in members}, {"1.9.1"})

    def test_agent_self_heartbeat_settings(self):
        server = self.get_json("/v1/agent/self")["config"]["Server"]
        self.assertEqual(server["HeartbeatGrace"], 10 * 10**9)
        self.assertEqual(server["MinHeartbeatTTL"], "10s")
        self.assertEqual(server["MaxHeartbeatsPerSecond"], 50.0)

    def test_agent_self_heartbeat_defaults_zero(self):
        SERVER.load(scenarios.two_namespaces())
        server = self.get_json("/v1/agent/self")["config"]["Server"]
        self.assertEqual((server["HeartbeatGrace"], server["MinHeartbeatTTL"],
                          server["MaxHeartbeatsPerSecond"]), (0, 0, 0))

    def test_scheduler_oversubscription(self):
        SERVER.load(scenarios.doctor_no_reserved(oversubscription=True))
        config = self.get_json("/v1/operator/scheduler/configuration")["SchedulerConfig"]
        self.assertIs(config["MemoryOversubscriptionEnabled"], True)

    def test_server_outside_raft(self):
        SERVER.load(scenarios.doctor_raft_missing())
        raft = self.get_json("/v1/operator/raft/configuration")
        members = self.get_json("/v1/agent/members")["Members"]
        autopilot = self.get_json("/v1/operator/autopilot/health")
        self.assertEqual([s["Node"] for s in raft["Servers"]], ["server-1.global", "server-2.global"])
        self.assertEqual(len(members), 3)
        self.assertEqual(len(autopilot["Servers"]), 2)
        self.assertEqual(self.get_json("/v1/status/peers"), ["10.0.0.1:4647", "10.0.0.2:4647"])

    def test_server_outside_raft_state_roundtrip(self):
        SERVER.load(scenarios.doctor_raft_missing())
        servers = SERVER.state()["servers"]
        self.assertIs(servers[2]["in_raft"], False)
        self.assertNotIn("in_raft", servers[0])

    def test_leader_outside_raft_400(self):
        reply = SERVER.request("PUT", "/_test/scenario", body={"servers": [
            {"Name": "server-1", "Leader": True, "in_raft": False}]})
        self.assertEqual(reply.status, 400)
        self.assertIn("in_raft", reply.text())

    def test_colocated_client_address(self):
        SERVER.load(scenarios.doctor_colocated())
        nodes = self.get_json("/v1/nodes")
        self.assertIn("10.0.0.1", [n["Address"] for n in nodes])

    def test_expectations_recorded(self):
        self.assertEqual(scenarios.expected(self.scenario)["doctor"], {})
        self.assertEqual(scenarios.expected(scenarios.doctor_servers(4))["doctor"],
                         {"servers_even": "warning"})


class ScenarioTest(unittest.TestCase):
    def test_two_namespaces_orphans_match_allocs(self):
        scenario = scenarios.two_namespaces()
        allocs = {a["ID"]: a for a in scenario["allocations"]}
        for namespace, reg_id in scenarios.orphan_ids(scenario):
            reg = scenarios.registration(scenario, namespace, reg_id)
            alloc = allocs.get(reg["AllocID"])
            with self.subTest(reg=reg_id):
                self.assertTrue(alloc is None
                                or alloc["ClientStatus"] in ("complete", "failed", "lost"))
        for namespace, reg_id in scenarios.protected_ids(scenario):
            reg = scenarios.registration(scenario, namespace, reg_id)
            with self.subTest(reg=reg_id):
                self.assertIn(allocs[reg["AllocID"]]["ClientStatus"],
                              ("running", "pending", "unknown"))

    def test_two_namespaces_kinds_per_namespace(self):
        scenario = scenarios.two_namespaces()
        kinds = scenarios.expected(scenario)["orphan_kind"]
        for namespace in ("default", "prod"):
            found = sorted(kinds[reg_id] for ns, reg_id in scenarios.orphan_ids(scenario)
                           if ns == namespace)
            self.assertEqual(found, ["absent", "complete", "failed", "lost"])

    def test_protected_cases_present(self):
        scenario = scenarios.two_namespaces()
        allocs = {a["ID"]: a for a in scenario["allocations"]}
        cases = set()
        for namespace, reg_id in scenarios.expected(scenario)["keep"]:
            alloc = allocs[scenarios.registration(scenario, namespace, reg_id)["AllocID"]]
            cases.add((alloc["ClientStatus"], alloc["DesiredStatus"]))
        self.assertEqual(cases, {("pending", "run"), ("unknown", "run"), ("running", "stop")})
        self.assertIn("disconnected", {n["Status"] for n in scenario["nodes"]})

    def test_registration_id_form(self):
        scenario = scenarios.two_namespaces()
        for reg in scenario["services"]:
            with self.subTest(reg=reg["ID"]):
                self.assertTrue(reg["ID"].startswith("_nomad-task-%s-" % reg["AllocID"]))
                self.assertIn("-%s-" % reg["ServiceName"], reg["ID"])

    def test_deterministic(self):
        self.assertEqual(scenarios.two_namespaces(), scenarios.two_namespaces())

    def test_down_node_option(self):
        without = scenarios.two_namespaces()
        with_down = scenarios.two_namespaces(down_node=True)
        self.assertNotIn("down", {n["Status"] for n in without["nodes"]})
        self.assertEqual(len(scenarios.expected(with_down)["down_nodes"]), 1)
        self.assertEqual(sum(n["Status"] == "ready" for n in with_down["nodes"]), 4)

    def test_gc_pileup_counts(self):
        scenario = scenarios.gc_pileup(terminal_allocs=7, terminal_evals=9, down_node=True)
        expect = scenarios.expected(scenario)
        terminal = [a for a in scenario["allocations"]
                    if a["ClientStatus"] in ("complete", "failed", "lost")]
        self.assertEqual(len(terminal), 7)
        self.assertEqual(len(expect["terminal_evals"]), 9)
        self.assertEqual(expect["gc_removed_nodes"], expect["down_nodes"])

    def test_healthy_has_no_orphans(self):
        scenario = scenarios.healthy()
        self.assertEqual(scenarios.orphan_ids(scenario), set())
        self.assertEqual(scenarios.expected(scenario)["terminal_allocs"], [])


class CommandLineTest(unittest.TestCase):
    def test_rejects_non_loopback_bind(self):
        with tempfile.TemporaryDirectory() as tmpdir:
            result = subprocess.run(
                [sys.executable, harness.FAKE_NOMAD, "--port-file",
                 os.path.join(tmpdir, "port"), "--bind", "0.0.0.0"],
                capture_output=True, text=True, timeout=10)
            self.assertEqual(result.returncode, 2)
            self.assertIn("loopback", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmpdir, "port")))

    def test_scenario_name_and_clean_stop(self):
        nomad = FakeNomad(scenario_name="gc_pileup").start()
        try:
            evals = nomad.get("/v1/evaluations?status=failed").json()
        finally:
            returncode = nomad.stop()
        self.assertEqual(len(evals), 33)
        self.assertEqual(returncode, 0)

    def test_scenario_file(self):
        with tempfile.TemporaryDirectory() as tmpdir:
            path = os.path.join(tmpdir, "scenario.json")
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"region": "eu", "nodes": [{"ID": scenarios.stable_uuid("n"),
                                                      "Name": "n1", "Status": "ready"}]}, handle)
            port_file = os.path.join(tmpdir, "port")
            process = subprocess.Popen([sys.executable, harness.FAKE_NOMAD, "--port-file",
                                        port_file, "--scenario", path],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 10
                while not os.path.exists(port_file) and time.monotonic() < deadline:
                    time.sleep(0.02)
                with open(port_file, encoding="ascii") as handle:
                    port = int(handle.read())
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", "/v1/nodes?region=eu")
                response = connection.getresponse()
                nodes = json.loads(response.read())
                connection.close()
            finally:
                process.terminate()
                process.wait(timeout=10)
            self.assertEqual([n["Name"] for n in nodes], ["n1"])
            self.assertEqual(process.returncode, 0)

    def test_invalid_scenario_load_400(self):
        reply = SERVER.request("PUT", "/_test/scenario", body={"nodes": [{"Name": "no-id"}]})
        self.assertEqual(reply.status, 400)
        self.assertIn("nodes[0] is missing ID", reply.text())


class HarnessTest(unittest.TestCase):
    def test_run_medic_requires_binary(self):
        saved = os.environ.pop("NOMAD_MEDIC_BIN", None)
        try:
            with self.assertRaises(RuntimeError):
                harness.run_medic(["--version"])
        finally:
            if saved is not None:
                os.environ["NOMAD_MEDIC_BIN"] = saved

    def test_run_medic_clean_env(self):
        saved = {name: os.environ.get(name) for name in ("NOMAD_MEDIC_BIN", "NOMAD_ADDR")}
        os.environ["NOMAD_MEDIC_BIN"] = "/usr/bin/env"
        os.environ["NOMAD_ADDR"] = "http://127.0.0.1:1"
        try:
            result = harness.run_medic([], env={"NOMAD_REGION": "eu"})
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.assertEqual(result.returncode, 0)
        lines = result.stdout.splitlines()
        self.assertIn("NOMAD_REGION=eu", lines)
        self.assertFalse([line for line in lines if line.startswith("NOMAD_ADDR=")])

    def test_zero_grace_policy_text(self):
        text = harness.zero_grace_policy("http://127.0.0.1:4646", "/tmp/x/journal.db",
                                         token='se"cret', extra="log_level = \"debug\";")
        self.assertIn('address = "http://127.0.0.1:4646";', text)
        self.assertIn('token = "se\\"cret";', text)
        self.assertIn('pause_file = "/tmp/x/pause";', text)
        self.assertIn('grace = "0s";', text)
        self.assertIn('mode = "enforce";', text)
        self.assertIn("system_gc = {", text)
        self.assertTrue(text.rstrip().endswith('log_level = "debug";'))

    def test_write_config(self):
        with tempfile.TemporaryDirectory() as tmpdir:
            path = harness.write_config(tmpdir, "a = 1;\n")
            with open(path, encoding="utf-8") as handle:
                self.assertEqual(handle.read(), "a = 1;\n")


if __name__ == "__main__":
    unittest.main()
