# Nomad agent configuration for a Raspberry Pi Zero W that runs the
# sensorfarm bridge: a client only (the servers run on the Kubernetes
# cluster), raw_exec on and every other driver off, mutual TLS with the
# servers, ACLs enforced. Install it as /etc/nomad.d/client.hcl and set
# datacenter and name for each board (see nomad/README.md).
#
# Nomad reads its agent configuration with HCL 1; this file keeps to the
# syntax HCL 1 and HCL 2 share (nomad/jobspec's test reads it with HCL 2).

region     = "global"
datacenter = "farm1"     # the site: the bridge's --site is this
name       = "pizero-01" # the node: the bridge's --node; a-z 0-9 _ - only, 64 at most
data_dir   = "/var/lib/nomad"
bind_addr  = "0.0.0.0"

client {
  enabled = true
  servers = ["nomad.farm.lan:4647"]

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

  # What the OS and the Nomad client itself keep of the board's 1 GHz
  # core and 512 MB, out of the scheduler's reach. Not measured here (no
  # Nomad runs in this project's tests): check `ps -o rss= -C nomad` on a
  # board and adjust.
  reserved {
    cpu    = 200
    memory = 192
  }

  # raw_exec only: no time or memory spent fingerprinting Docker, Java,
  # QEMU or exec on a board that runs none of them.
  options = {
    "driver.allowlist" = "raw_exec"
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
# -client` signed by the cluster's CA; verify_server_hostname makes the
# client check that it talks to a server of this region.
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
