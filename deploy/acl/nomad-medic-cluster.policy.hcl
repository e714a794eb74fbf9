# Nomad ACL policy for nomad-medic's cluster scope: the least it needs to
# read the cluster, delete orphaned service registrations, coordinate
# through its Variables and mark flapping nodes ineligible.
#
# As a token's policy:
#   nomad acl policy apply -description "nomad-medic cluster scope" \
#     nomad-medic-cluster nomad-medic-cluster.policy.hcl
#   nomad acl token create -name nomad-medic-cluster -policy nomad-medic-cluster
# Attached to the Nomad job's workload identity instead:
#   nomad acl policy apply -namespace default -job nomad-medic-cluster \
#     nomad-medic-cluster nomad-medic-cluster.policy.hcl
#
# Not granted, because Nomad requires a management token for them:
#   - PUT /v1/system/gc (rules.system_gc). With this policy, set
#     rules.system_gc.enabled = false, or run the controller with a
#     management token if you accept what that token could do.
#   - GET /v1/operator/raft/configuration. nomad-medic does not read it: it
#     judges server health from /v1/operator/autopilot/health, which needs
#     only operator read.

# Every namespace: list allocations, evaluations and native service
# registrations (read-job), and delete orphaned registrations.
# DELETE /v1/service/<name>/<id> needs submit-job on Nomad 1.x, which also
# allows registering jobs in the namespace. Nomad 2.0 and later accept the
# narrower delete-service-registration: replace submit-job with it there.
namespace "*" {
  capabilities = ["read-job", "submit-job"]
}

# Nomad applies only the most specific matching namespace rule, so the
# default namespace repeats the capabilities above and adds nomad-medic's
# Variables (coordination.namespace and coordination.prefix):
#   nomad-medic/lock            the leadership lock (lock-acquire, -renew,
#                               -release need write)
#   nomad-medic/heartbeat/<id>  host heartbeats written by the node scope (read)
#   nomad-medic/restart/<id>    restart orders (list, read, write)
# The controller never deletes its Variables, so destroy is not granted.
namespace "default" {
  capabilities = ["read-job", "submit-job"]

  variables {
    path "nomad-medic/*" {
      capabilities = ["read", "write", "list"]
    }
  }
}

# Node list and status, agent members (read), and
# POST /v1/node/<id>/eligibility for rules.node_ineligible (write). Use
# "read" if that rule is disabled.
node {
  policy = "write"
}

# GET /v1/operator/autopilot/health.
operator {
  policy = "read"
}

# GET /v1/agent/self.
agent {
  policy = "read"
}
