# nomad-medic, node scope, as a Nomad system job: one instance on every
# client. It removes the network namespaces and CNI state that crashed or
# restarted clients leave behind, writes this host's heartbeat Variable, and
# restarts the local Nomad agent when the cluster scope orders it.
#
# It runs with the raw_exec driver because it needs the host itself:
#   - root, for CAP_NET_ADMIN and CAP_SYS_ADMIN (entering and unmounting
#     network namespaces, iptables, deleting veths) and for reading
#     /proc/<pid>/ns/net of every process;
#   - the host's mount namespace, so that unmounting /var/run/netns/<alloc ID>
#     takes effect on the host and not in a private copy, which exec's
#     chroot would give it;
#   - the host's /var/run/netns, /var/run/cni, /var/lib/cni and iptables.
# raw_exec runs the task as the user of the Nomad client (root), without
# isolation. It is disabled by default; enable it in the client
# configuration of every client that should run this job:
#   plugin "raw_exec" {
#     config {
#       enabled = true
#     }
#   }
#
# Before the first run, attach the ACL policy to the job's workload identity:
#   nomad acl policy apply -namespace default -job nomad-medic-node \
#     nomad-medic-node deploy/acl/nomad-medic-node.policy.hcl
#
# deploy/nomad/nomad-medic-node.nomad.json is the same job in the JSON form
# that POST /v1/jobs accepts; change both together.

job "nomad-medic-node" {
  type        = "system"
  namespace   = "default"
  datacenters = ["*"]

  # Above the default of 50: a host full of leaked namespaces is exactly
  # where this job must still be placed.
  priority = 80

  group "node" {
    network {
      # The listener's port: /healthz, /readyz and /metrics.
      port "http" {}
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    # Replace one host's instance at a time. A system job takes only
    # max_parallel and stagger here on the Nomad versions this project
    # supports.
    update {
      max_parallel = 1
      stagger      = "30s"
    }

    task "nomad-medic" {
      driver = "raw_exec"

      config {
        command = "/usr/bin/nomad-medic"
        args    = ["run", "--scope", "node", "--config", "local/nomad-medic.conf"]
      }

      # The workload identity becomes NOMAD_TOKEN. Its permissions are the
      # ACL policy attached to this job. The servers listed in the template
      # accept it too.
      identity {
        env = true
      }

      env {
        # The local client agent's HTTP API. Use https:// and set
        # NOMAD_CACERT when the agent's HTTP API uses TLS.
        NOMAD_ADDR = "http://127.0.0.1:4646"
      }

      service {
        name     = "nomad-medic-node"
        provider = "nomad"
        port     = "http"
        tags     = ["node"]

        check {
          name     = "healthz"
          type     = "http"
          path     = "/healthz"
          interval = "10s"
          timeout  = "2s"

          check_restart {
            limit = 3
            grace = "90s"
          }
        }
      }

      # The configuration file passed with --config. Settings not written
      # here keep the defaults of policies/default.conf. raw_exec has no
      # chroot, so every path below is a path on the host.
      template {
        destination   = "local/nomad-medic.conf"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOF
          # Rendered by Nomad for the job nomad-medic-node.

          {{- /*
            The Nomad servers' HTTP API addresses, separated by spaces. The
            node scope writes its heartbeat and reads restart orders through
            them, because the local agent is down exactly when its restart
            is needed. Replace the examples with your servers. With Consul,
            the list can come from range service "nomad" instead.
          */}}
          {{- $servers := "https://nomad-server-1.example.internal:4646 https://nomad-server-2.example.internal:4646 https://nomad-server-3.example.internal:4646" }}

          journal = {
            # A directory of its own: a cluster-scope controller on the
            # same host keeps its journal in /var/lib/nomad-medic.
            path = "/var/lib/nomad-medic-node/journal.db";
          };

          controller = {
            # Record what would be done, change nothing. Switch to "approve"
            # or "enforce" once the history looks right.
            mode = "dry-run";
            pause_file = "/var/lib/nomad-medic-node/pause";
          };

          node = {
            servers = [{{ range $i, $server := split " " $servers }}{{ if $i }}, {{ end }}"{{ $server }}"{{ end }}];
          };

          # Must match the cluster scope's coordination settings.
          coordination = {
            namespace = "default";
            prefix = "nomad-medic";
          };

          listener = {
            enabled = true;
            address = "{{ env "NOMAD_ADDR_http" }}";
          };
        EOF
      }

      resources {
        # MHz and MB, shared with the CNI plugins and iptables programs it
        # runs one at a time.
        cpu    = 100
        memory = 128
      }

      # SIGINT makes the controller finish the current cleanup step and exit.
      kill_timeout = "30s"
    }
  }
}
