# Lets the bridge's tasks read their MQTT passwords from Nomad Variables at
# nomad/jobs/bridge/<datacenter>/<node>. A task's workload identity reads
# nomad/jobs/bridge, nomad/jobs/bridge/bridge and nomad/jobs/bridge/bridge/bridge
# without a policy; the per-node paths below need this one, attached to the
# task:
#
#   nomad acl policy apply -namespace default -job bridge -group bridge -task bridge \
#     -description "sensorfarm bridge: read the bridges' MQTT passwords" \
#     bridge-variables nomad/bridge-variables.policy.hcl
#
# Nomad attaches a policy to a job, group or task, not to a node: every
# bridge's identity can read every bridge's password. See nomad/README.md.

namespace "default" {
  variables {
    path "nomad/jobs/bridge/*" {
      capabilities = ["read"]
    }
  }
}
