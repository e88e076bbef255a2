# The sensorfarm bridge on every Pi Zero of the farm: a system job, so each
# Nomad client that matches the constraints runs exactly one bridge, with
# raw_exec, so that the bridge reaches /dev/i2c-1 and a spool directory on the
# host. Site and node come from the client itself (its datacenter and name),
# the MQTT password from Nomad Variables. See nomad/README.md.
#
#   nomad job run -var 'broker_url=mqtts://broker.farm.lan:31884' -var 'ca_file=/etc/sensorfarm/ca.pem' nomad/bridge.hcl

variable "datacenters" {
  description = "The Nomad datacenters to run in. Each datacenter is a site: the bridge's --site is its client's datacenter."
  type        = list(string)
  default     = ["farm1"]
}

variable "node_class" {
  description = "Only clients with this node_class run the bridge (nomad/client.hcl sets it). Empty: every Linux ARM client in the datacenters."
  type        = string
  default     = "sensorfarm-pizero"
}

variable "broker_url" {
  description = "The broker, as the bridge's --broker: the NodePort of broker/k8s on any node of the cluster, mqtts://HOST:31884 with ca_file (TLS only), or tcp://HOST:1883 for a broker on a trusted network."
  type        = string
  default     = "tcp://broker.farm.lan:31883"
}

variable "ca_file" {
  description = "With an mqtts:// broker_url: the PEM file on each Pi of the CA that signs the broker's certificate. Empty: the system's roots."
  type        = string
  default     = ""
}

variable "bridge_path" {
  description = "Where the bridge binary is installed on each Pi (bin/linux-arm6/bridge from make build). Used when bridge_url is empty."
  type        = string
  default     = "/usr/local/bin/bridge"
}

variable "bridge_url" {
  description = "Instead of bridge_path: an http(s) URL of the ARMv6 bridge binary, fetched by Nomad for each allocation and checked against bridge_sha256."
  type        = string
  default     = ""
}

variable "bridge_sha256" {
  description = "The SHA-256 of the binary at bridge_url, as sha256sum prints it. Required with bridge_url."
  type        = string
  default     = ""

  validation {
    condition     = var.bridge_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.bridge_sha256))
    error_message = "The bridge_sha256 value must be 64 lower-case hex digits, as sha256sum prints them."
  }
}

variable "spool_dir" {
  description = "The bridge's spool on the host: readings not yet acknowledged by the broker, and each stream's seq. Outside the allocation directory so that it outlives every allocation."
  type        = string
  default     = "/var/lib/sensorfarm"
}

variable "extra_args" {
  description = "More bridge flags for every node of the job, e.g. [\"--bme280-addr\", \"0x77\"] or [\"--gps=false\"]."
  type        = list(string)
  default     = []
}

job "bridge" {
  type        = "system"
  datacenters = var.datacenters

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # The binary is built for ARMv6 (GOARM=6): Nomad on a Pi Zero reports arm.
  constraint {
    attribute = "${attr.cpu.arch}"
    value     = "arm"
  }

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "${node.class}"
      value     = constraint.value
    }
  }

  # A new version reaches two boards at a time; each must keep its bridge
  # running for 30 s before the next two are touched. A version that cannot
  # stay up on a board within 5 minutes fails the deployment and Nomad puts
  # the last good version back, so a bad release stops at two boards. A board
  # that is down during a deployment simply gets the new version when it
  # comes back.
  update {
    max_parallel      = 2
    health_check      = "task_states"
    min_healthy_time  = "30s"
    healthy_deadline  = "5m"
    progress_deadline = "15m"
    auto_revert       = true
  }

  group "bridge" {
    # A bridge exits only for what a restart may cure (its spool directory
    # unusable, a config error after an edit): retry every 15 s, and after 5
    # failures in 10 minutes wait out the interval and start again, forever.
    # A system job is never rescheduled elsewhere, so "fail" would leave the
    # board without a bridge until someone noticed.
    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    task "bridge" {
      driver = "raw_exec"

      config {
        command = var.bridge_url == "" ? var.bridge_path : "local/bridge"
        args = concat([
          "--broker", var.broker_url,
          "--site", "${node.datacenter}",
          "--node", "${node.unique.name}",
          "--username", "${node.datacenter}-${node.unique.name}",
          "--password-file", "${NOMAD_SECRETS_DIR}/mqtt-password",
          "--spool", var.spool_dir,
        ], var.ca_file == "" ? [] : ["--ca-file", var.ca_file], var.extra_args)
      }

      dynamic "artifact" {
        for_each = var.bridge_url == "" ? [] : [var.bridge_url]
        content {
          source      = artifact.value
          destination = "local/bridge"
          mode        = "file"
          options {
            checksum = "sha256:${var.bridge_sha256}"
          }
        }
      }

      # The password of this node's broker user, from the Nomad Variable
      # nomad/jobs/bridge/<datacenter>/<node> (item "password"), into the
      # task's secrets directory: never in the job, its environment or its
      # logs. Until the variable exists the task waits here; a new password
      # restarts the bridge.
      template {
        data                 = <<-EOT
          {{ with nomadVar (printf "nomad/jobs/bridge/%s/%s" (env "node.datacenter") (env "node.unique.name")) }}{{ .password }}{{ end }}
        EOT
        destination          = "secrets/mqtt-password"
        perms                = "0400"
        change_mode          = "restart"
        error_on_missing_key = true
      }

      # On SIGTERM the bridge stops its sensors, waits up to 10 s for the
      # broker's acknowledgements in flight, publishes offline (2 s at most)
      # and closes its spool cleanly; the e2e test measures this against a
      # broker that no longer answers. 30 s is also the longest a client
      # allows by default (max_kill_timeout).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # Measured: see "Resources" in nomad/README.md.
      resources {
        cpu    = 100
        memory = 40
      }
    }
  }
}
