# Nomad ACL policy for nomad-medic's node scope: the least it needs to read
# this client's allocations, write the host heartbeat and take restart
# orders. The network cleanup itself happens on the host and needs no ACL.
#
# As a token's policy (one token can serve every client):
#   nomad acl policy apply -description "nomad-medic node scope" \
#     nomad-medic-node nomad-medic-node.policy.hcl
#   nomad acl token create -name nomad-medic-node -policy nomad-medic-node
# Attached to the Nomad system job's workload identity instead:
#   nomad acl policy apply -namespace default -job nomad-medic-node \
#     nomad-medic-node nomad-medic-node.policy.hcl
#
# ACL paths cannot name "this node", so every client may write any node's
# heartbeat and restart order. A client's root can do more harm than that
# anyway; keep the token on the clients only.

# GET /v1/node/<id>/allocations returns allocations of every namespace, and
# GET /v1/allocation/<id> looks up a single one: read-job everywhere.
namespace "*" {
  capabilities = ["read-job"]
}

# Nomad applies only the most specific matching namespace rule, so the
# default namespace repeats read-job and adds nomad-medic's Variables
# (coordination.namespace and coordination.prefix):
#   nomad-medic/heartbeat/<node ID>  written every heartbeat_interval, never read
#   nomad-medic/restart/<node ID>    the order for this host: read it, and
#                                    write its outcome with check-and-set
namespace "default" {
  capabilities = ["read-job"]

  variables {
    path "nomad-medic/heartbeat/*" {
      capabilities = ["write"]
    }

    path "nomad-medic/restart/*" {
      capabilities = ["read", "write"]
    }
  }
}

# GET /v1/node/<id>/allocations.
node {
  policy = "read"
}

# GET /v1/agent/self, for this host's node ID.
agent {
  policy = "read"
}
