# Lets the bridge job's tasks read the MQTT passwords from Nomad Variables at
# nomad/jobs/bridge/<datacenter>/<node>. A task's workload identity reads
# nomad/jobs/bridge, nomad/jobs/bridge/<group> and .../<group>/<task>
# without a policy; the per-node paths below need this one, attached to the
# job (both of its tasks: the password task reads the Variable):
#
#   nomad acl policy apply -namespace default -job bridge \
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
