"""Self-test of the test Nomad API server (tests/fake_nomad/fake_nomad.py).

Run from tests/integration: python3 -m unittest -v test_fake_nomad
"""

import gzip
import http.client
import json
import os
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
