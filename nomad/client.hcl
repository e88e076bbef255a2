# Nomad agent configuration for a board that runs the sensorfarm bridge: a
# client only (the servers run on the Kubernetes cluster, nomad/server/),
# raw_exec on and every other driver off, mutual TLS with the servers, ACLs
# enforced, nothing contacted but the servers. Install it as
# /etc/nomad.d/client.hcl and set datacenter, name and servers for each
# board (see nomad/README.md). e2e/nomad_real_test.go runs a real Nomad
# 1.6.5 client on this file (with its paths and addresses overridden for
# loopback).

region     = "global"
datacenter = "farm1"     # the site: the bridge's --site is this
name       = "pizero-01" # the node: the bridge's --node; a-z 0-9 _ - only, 64 at most
data_dir   = "/var/lib/nomad"
bind_addr  = "0.0.0.0"

# A stock agent asks checkpoint-api.hashicorp.com for a newer version.
disable_update_check = true

client {
  enabled = true
  # The Nomad servers' RPC, through the NodePort Service of nomad/server/
  # on any node of the cluster. The servers then tell the client their own
  # advertised addresses (each server's node, port 32647), which a board
  # must reach too.
  servers = ["nomad.farm.lan:32647"]

  # The bridge job runs on clients of this class only (its node_class
  # variable).
  node_class = "sensorfarm-pizero"
  meta = {
    board = "rpi-zero-w"
  }

  # The longest kill_timeout a job may ask for: the bridge's job asks 30s.
  max_kill_timeout = "30s"

  # An SD card is small: keep few dead allocations around.
  gc_max_allocs = 10

  # What the OS and the Nomad client itself keep of the board's memory,
  # out of the scheduler's reach: the agent's own RSS, measured on 1.6.5
  # (nomad/README.md, "Resources").
  reserved {
    cpu    = 200
    memory = 192
  }

  options = {
    # raw_exec only: no time or memory spent fingerprinting Docker, Java,
    # QEMU or exec on a board that runs none of them.
    "driver.allowlist" = "raw_exec"
    # The cloud fingerprinters probe 169.254.169.254 (and the Azure and
    # DigitalOcean metadata services) at every start: a board is in no
    # cloud. consul and vault: none runs on a board.
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean,consul,vault"
  }

  # The bridge's template reads the password task's copy in the
  # allocation directory, which the sandbox (task directory only) would
  # refuse. Turning it off lets a job's templates read any file on the
  # board as root: nothing a job could not already do here, since raw_exec
  # runs any command of a job as root.
  template {
    disable_file_sandbox = true
  }
}

# raw_exec runs the bridge as the client's own user, without isolation:
# the bridge needs /dev/i2c-1 and a spool directory on the host. It is off
# unless enabled here.
plugin "raw_exec" {
  config {
    enabled = true
  }
}

# Mutual TLS on RPC and HTTP, with certificates from `nomad tls cert create
# -client` signed by the servers' CA (nomad/server/README.md);
# verify_server_hostname makes the client check that it talks to a server
# of this region (server.global.nomad), whatever address it dialled.
tls {
  http = true
  rpc  = true

  ca_file   = "/etc/nomad.d/tls/nomad-agent-ca.pem"
  cert_file = "/etc/nomad.d/tls/global-client-nomad.pem"
  key_file  = "/etc/nomad.d/tls/global-client-nomad-key.pem"

  verify_server_hostname = true
  # With ACLs on, a token guards the HTTP API; requiring client
  # certificates there too would lock out the CLI on the board.
  verify_https_client = false
}

# ACLs are enforced on the servers; a client enforces them on its own
# endpoints (alloc exec, logs, fs), so the setting must match.
acl {
  enabled = true
}
