# nomad-medic, cluster scope, as a Nomad service job.
#
# Two instances run on two different clients. Only the instance that holds
# the Nomad Variable lock "nomad-medic/lock" in the namespace "default" reads
# the cluster and acts; the other one waits and takes the lock over when the
# holder stops renewing it (after the lock TTL of 30s plus Nomad's lock delay
# of 15s, with the defaults). A count of 2 is therefore safe and keeps a
# standby ready.
#
# Before the first run:
#   1. On every client that may run it, declare the host volume
#      "nomad-medic" (deploy/README.md shows the client stanza).
#   2. Attach the ACL policy to the job's workload identity:
#        nomad acl policy apply -namespace default -job nomad-medic-cluster \
#          nomad-medic-cluster deploy/acl/nomad-medic-cluster.policy.hcl
#   3. nomad job run deploy/nomad/nomad-medic-cluster.nomad.hcl
#
# deploy/nomad/nomad-medic-cluster.nomad.json is the same job in the JSON
# form that POST /v1/jobs accepts; change both together.

job "nomad-medic-cluster" {
  type        = "service"
  namespace   = "default"
  datacenters = ["*"]

  # Above the default of 50, so that the controller keeps its place when the
  # cluster runs short of capacity, which is when it is needed.
  priority = 80

  group "controller" {
    count = 2

    # The standby must not share a host with the holder: one host failure
    # would otherwise take both.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      # The listener's port: /healthz, /readyz, /metrics and the approval API.
      port "http" {}
    }

    # The SQLite journal lives on the client's host volume "nomad-medic", so
    # it survives a restart of the allocation and keeps the first-seen times
    # of findings, the rate-limit buckets and the approval queue.
    volume "journal" {
      type      = "host"
      source    = "nomad-medic"
      read_only = false
    }

    # Alternative without a host volume: keep the journal in the allocation's
    # data directory, which Nomad carries over to the replacement allocation
    # (sticky) and copies when the replacement lands on another client
    # (migrate, which needs the old client to be reachable). Remove the volume
    # and volume_mount blocks and set journal.path in the template below to
    # "{{ env "NOMAD_ALLOC_DIR" }}/data/journal.db".
    #
    # ephemeral_disk {
    #   sticky  = true
    #   migrate = true
    #   size    = 300
    # }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "30s"
      healthy_deadline  = "5m"
      progress_deadline = "10m"
      auto_revert       = true
    }

    task "nomad-medic" {
      # exec isolates the controller in a chroot. It needs nothing from the
      # host but the binary, which the default chroot (/usr among others)
      # contains.
      driver = "exec"

      # The exec driver's usual user, named here because the host volume's
      # directory must be writable by it (deploy/README.md).
      user = "nobody"

      config {
        command = "/usr/bin/nomad-medic"
        args    = ["run", "--config", "local/nomad-medic.conf"]
      }

      # The workload identity becomes NOMAD_TOKEN. Its permissions are the
      # ACL policy attached to this job (step 2 above). A workload identity
      # is never a management token, so rules.system_gc is disabled below.
      identity {
        env = true
      }

      # Alternative: an ACL token kept in the Nomad Variable
      # nomad/jobs/nomad-medic-cluster (item "token"), which the job's
      # workload identity may read without any extra policy. Remove the
      # identity block above when you use it. A management token there would
      # allow rules.system_gc, at the price of a long-lived secret.
      #
      # template {
      #   destination = "secrets/nomad-token.env"
      #   env         = true
      #   change_mode = "restart"
      #   data        = <<-EOF
      #     {{ with nomadVar "nomad/jobs/nomad-medic-cluster" }}NOMAD_TOKEN={{ .token }}{{ end }}
      #   EOF
      # }

      env {
        # The Task API socket of the local client agent. It forwards requests
        # to the servers, needs no TLS settings, and accepts the workload
        # identity.
        NOMAD_ADDR = "unix://${NOMAD_SECRETS_DIR}/api.sock"
      }

      service {
        name     = "nomad-medic"
        provider = "nomad"
        port     = "http"
        tags     = ["cluster"]

        # The check is /healthz, the liveness probe, and it must pass on the
        # standby as well as on the lock holder, or no deployment becomes
        # healthy. /readyz answers 200 only on the instance that holds the
        # lock and saw the cluster completely, so it would mark the standby
        # as failing: use it in dashboards and alerts, not as a Nomad check.
        # A standby runs no pass, but its attempts to take the lock keep its
        # /healthz at 200 (tests/deploy/test_standby.py).
        check {
          name     = "healthz"
          type     = "http"
          path     = "/healthz"
          interval = "10s"
          timeout  = "2s"

          # Restart a controller whose passes stopped, after the first pass has
          # had time to finish.
          check_restart {
            limit = 3
            grace = "90s"
          }
        }
      }

      volume_mount {
        volume      = "journal"
        destination = "/var/lib/nomad-medic"
      }

      # The configuration file passed with --config. Settings not written
      # here keep the defaults of policies/default.conf. The file is rendered
      # once per allocation. SIGHUP reloads the policy.
      template {
        destination   = "local/nomad-medic.conf"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOF
          # Rendered by Nomad for the job nomad-medic-cluster.

          journal = {
            # On the host volume mounted at /var/lib/nomad-medic.
            path = "/var/lib/nomad-medic/journal.db";
          };

          controller = {
            # Record what would be done, change nothing. Switch to "approve"
            # or "enforce" once the history looks right.
            mode = "dry-run";
            pause_file = "/var/lib/nomad-medic/pause";
          };

          rules = {
            # PUT /v1/system/gc needs a management token, and a workload
            # identity is never one.
            system_gc = {
              enabled = false;
            };

            # Restarting servers runs a command that reaches them
            # (executor "exec", for example ssh), which this job's
            # sandbox does not provide.
            server_restart = {
              enabled = false;
            };
          };

          # The lock is <prefix>/lock in this namespace; the ACL policy
          # grants these paths.
          coordination = {
            namespace = "default";
            prefix = "nomad-medic";
          };

          listener = {
            enabled = true;
            # The allocation's "http" port, on the client's address. The
            # approval API stays closed (403) until tokens are added here.
            address = "{{ env "NOMAD_ADDR_http" }}";
          };
        EOF
      }

      resources {
        # MHz and MB. A pass is mostly waiting for Nomad. Each response is
        # held in memory while it is parsed (at most nomad.max_response_size),
        # so raise memory on clusters whose allocation pages are large.
        cpu    = 100
        memory = 64
      }

      # SIGINT, Nomad's default kill signal, makes the controller finish the
      # current step and exit. 30s covers one Nomad request at the default
      # nomad.timeout and is the client's default max_kill_timeout.
      kill_timeout = "30s"
    }
  }
}
