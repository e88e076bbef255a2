# The sensorfarm bridge on every sensor board of the farm: a system job, so
# each Nomad client that matches the constraints runs exactly one bridge,
# with raw_exec, so that the bridge reaches /dev/i2c-1 and a spool directory
# on the host. Site and node come from the client itself (its datacenter and
# name), the MQTT password from Nomad Variables. See nomad/README.md, which
# also says what each Nomad version does with this file: it is run by
# e2e/nomad_real_test.go on a real Nomad 1.6.5 agent.
#
#   nomad job run -var 'broker_url=mqtts://broker.farm.lan:31884' -var 'ca_file=/etc/sensorfarm/ca.pem' nomad/bridge.hcl

variable "datacenters" {
  description = "The Nomad datacenters to run in. Each datacenter is a site: the bridge's --site is its client's datacenter."
  type        = list(string)
  default     = ["farm1"]
}

variable "node_class" {
  description = "Only clients with this node_class run the bridge (nomad/client.hcl sets it). Empty: every Linux client of cpu_archs in the datacenters."
  type        = string
  default     = "sensorfarm-pizero"
}

variable "cpu_archs" {
  description = "The CPU architectures to run on, as Nomad reports them (attr.cpu.arch, Go's GOARCH): arm (a Pi Zero, or any board on 32-bit Raspberry Pi OS), arm64, amd64. The bridge at bridge_path or bridge_url must be built for each."
  type        = list(string)
  default     = ["arm"]

  validation {
    condition     = length(var.cpu_archs) > 0 && length(setintersection(var.cpu_archs, ["arm", "arm64", "amd64"])) == length(distinct(var.cpu_archs))
    error_message = "The cpu_archs value must list one or more of arm, arm64, amd64."
  }
}

variable "broker_url" {
  description = "The broker, as the bridge's --broker: the NodePort of broker/k8s on any node of the cluster, mqtts://HOST:31884 with ca_file (TLS only), or tcp://HOST:1883 for a broker on a trusted network."
  type        = string
  default     = "tcp://broker.farm.lan:31883"
}

variable "ca_file" {
  description = "With an mqtts:// broker_url: the PEM file on each board of the CA that signs the broker's certificate. Empty: the system's roots."
  type        = string
  default     = ""
}

variable "bridge_path" {
  description = "Where the bridge binary is installed on each board (bin/linux-arm6/bridge from make build for arm). Used when bridge_url is empty."
  type        = string
  default     = "/usr/local/bin/bridge"
}

variable "bridge_url" {
  description = "Instead of bridge_path: an http(s) URL of the bridge binary, fetched by Nomad for each allocation and checked against bridge_sha256. One URL is one binary: set cpu_archs to its one architecture."
  type        = string
  default     = ""
}

variable "bridge_sha256" {
  description = "The SHA-256 of the binary at bridge_url, as sha256sum prints it. Required with bridge_url."
  type        = string
  default     = ""

  # Nomad's job language has no regex() (jobspec2/functions.go): what is
  # left after removing every lower-case hex digit must be nothing.
  validation {
    condition     = var.bridge_sha256 == "" || (strlen(var.bridge_sha256) == 64 && regex_replace(var.bridge_sha256, "[0-9a-f]", "") == "")
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

  constraint {
    attribute = "${attr.cpu.arch}"
    operator  = "set_contains_any"
    value     = join(",", var.cpu_archs)
  }

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "${node.class}"
      value     = constraint.value
    }
  }

  # What a system job gets from this block before Nomad 1.11: a new
  # version replaces the bridges two boards at a time, the next two 30 s
  # later, whether or not the first two came up. No deployment, no health
  # check, no automatic revert (those are for service jobs, and for system
  # jobs only from 1.11). Roll back with `nomad job revert bridge <version>`.
  update {
    max_parallel = 2
    stagger      = "30s"
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

    # The password, from the Nomad Variable
    # nomad/jobs/bridge/<datacenter>/<node> (item "password"), copied into
    # the allocation's directory on the board's disk. Its own task, so that
    # only it waits for the servers: after a reboot during a server outage
    # Nomad restarts the bridge from the copy on disk at once, while this
    # task waits, and a new password reaches the copy, and through it the
    # bridge, when the servers answer again.
    task "password" {
      driver = "raw_exec"

      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      # Nothing to run: the task exists for its template. sleep is in every
      # board's coreutils.
      config {
        command = "sleep"
        args    = ["infinity"]
      }

      template {
        data                 = <<-EOT
          {{ with nomadVar (printf "nomad/jobs/bridge/%s/%s" (env "node.datacenter") (env "node.unique.name")) }}{{ .password }}{{ end }}
        EOT
        destination          = "${NOMAD_ALLOC_DIR}/mqtt-password"
        perms                = "0400"
        change_mode          = "noop"
        error_on_missing_key = true
      }

      kill_timeout = "5s"

      # Measured: see "Resources" in nomad/README.md.
      resources {
        cpu    = 20
        memory = 16
      }
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

      # The password task's copy, into this task's in-memory secrets
      # directory, read by --password-file. A file template needs no
      # server, so the bridge starts without one; a changed copy (a new
      # password) restarts the bridge. Reading the allocation directory
      # from a template needs the client's template file sandbox off
      # (nomad/client.hcl says why that grants nothing raw_exec does not).
      template {
        data                 = <<-EOT
          {{ file (printf "%s/mqtt-password" (env "NOMAD_ALLOC_DIR")) }}
        EOT
        destination          = "secrets/mqtt-password"
        perms                = "0400"
        change_mode          = "restart"
        error_on_missing_key = true
      }

      # On SIGTERM the bridge stops its sensors, waits up to 10 s for the
      # broker's acknowledgements in flight, publishes offline (2 s at most)
      # and closes its spool cleanly. 30 s is also the longest a client
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
