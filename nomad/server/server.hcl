# The Nomad servers' configuration (Nomad 1.6), mounted from the ConfigMap
# nomad-server-config at /etc/nomad.d/server.hcl. The advertised addresses
# are the only per-pod part: the container writes them at start into
# /nomad/run/advertise.hcl from its node's IP (statefulset.yaml), and Nomad
# reads both files. e2e/nomad_real_test.go runs a real Nomad 1.6.5 server on
# this file, with paths, addresses and bootstrap_expect overridden for one
# server on loopback.

region     = "global"
datacenter = "cluster"
data_dir   = "/nomad/data"
bind_addr  = "0.0.0.0"

# A stock agent asks checkpoint-api.hashicorp.com for a newer version.
disable_update_check = true

server {
  enabled          = true
  bootstrap_expect = 3
  # The peers are found with -retry-join (statefulset.yaml): the headless
  # Service's DNS names, which exist only in the cluster.
}

acl {
  enabled = true
}

tls {
  http = true
  rpc  = true

  ca_file   = "/nomad/tls/nomad-agent-ca.pem"
  cert_file = "/nomad/tls/global-server-nomad.pem"
  key_file  = "/nomad/tls/global-server-nomad-key.pem"

  # Clients and servers check that a server's certificate names
  # server.global.nomad, whatever address they dialled (node IPs, NodePorts).
  verify_server_hostname = true
  # The HTTP API is guarded by ACL tokens; the kubelet's probes and the CLI
  # carry no client certificate.
  verify_https_client = false
}
