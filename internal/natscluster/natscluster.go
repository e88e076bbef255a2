// Package natscluster lays out a three-node nats-server cluster on 127.0.0.1
// that runs on the farm's configuration file, nats/k8s/nats.conf (see
// nats/README.md), and watches it: each node's settings (the file takes them
// from the environment), its health, and which node leads each JetStream
// stream. The e2e tests and the cluster benchmark start and end the processes
// their own way, by PID.
package natscluster

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/sensorfarm/sensorfarm/internal/loopback"
)

// Size is the number of nodes: the cluster the farm runs.
const Size = 3

// MQTTStreams are the JetStream streams nats-server's MQTT layer needs for
// the farm: QoS 1 messages, sessions, retained messages. A node that leads
// one of them holds every bridge up when it dies, until a new leader is
// elected.
func MQTTStreams() []string { return []string{"$MQTT_msgs", "$MQTT_sess", "$MQTT_rmsgs"} }

// Node is one node of the cluster; the addresses are 127.0.0.1:PORT.
type Node struct {
	Name string
	// Client is the NATS protocol's listener, HTTP the monitoring one
	// (/healthz, /jsz), MQTT the MQTT listener (TLS), Route the cluster's.
	Client, HTTP, MQTT, Route string
	// Env is what nats.conf reads: NATS_SERVER_NAME, NATS_HOST and the rest.
	Env []string
}

// Plan lays out the nodes nats-0 to nats-2 on free loopback ports, each routed
// to all three, with its JetStream store in dir/<name> and its MQTT listener
// on TLS with the pair cert and key (PEM files).
func Plan(dir, cert, key string) ([]*Node, error) {
	addrs, err := loopback.FreeAddrs(4 * Size)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, Size)
	for i := range nodes {
		nodes[i] = &Node{Name: fmt.Sprintf("nats-%d", i), Client: addrs[4*i], HTTP: addrs[4*i+1], MQTT: addrs[4*i+2], Route: addrs[4*i+3]}
	}
	for _, n := range nodes {
		n.Env = []string{
			"NATS_SERVER_NAME=" + n.Name, "NATS_HOST=127.0.0.1", "NATS_CLIENT_PORT=" + port(n.Client), "NATS_HTTP=" + n.HTTP,
			"NATS_STORE_DIR=" + filepath.Join(dir, n.Name), "NATS_CLUSTER_PORT=" + port(n.Route),
			"NATS_MQTT_PORT=" + port(n.MQTT), "NATS_TLS_CERT=" + cert, "NATS_TLS_KEY=" + key,
		}
		for i, r := range nodes {
			n.Env = append(n.Env, fmt.Sprintf("NATS_ROUTE_%d=nats-route://%s", i, r.Route))
		}
	}
	return nodes, nil
}

// port is the port of a loopback address made by Plan.
func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// Argv runs natsServer on the configuration file conf with a node's settings
// env, through env(1), which execs nats-server: the PID of the process started
// is nats-server's own.
func Argv(natsServer, conf string, env []string) []string {
	return append(append([]string{"env"}, env...), natsServer, "-c", conf)
}

// URL is the node's MQTT listener as the bridge's --broker takes it, by the
// name its certificate is for ("localhost").
func (n *Node) URL() string { return "mqtts://localhost:" + port(n.MQTT) }

// monitor bounds each request to a node's monitoring port.
var monitor = http.Client{Timeout: 2 * time.Second}

// Healthy waits up to limit until the /healthz of the node whose monitoring
// port is httpAddr answers 200: JetStream is up and current with the
// cluster's meta leader.
func Healthy(httpAddr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := monitor.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/healthz: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node at %s is not healthy within %s: %w", httpAddr, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Leaders returns the name of the node that leads each JetStream stream, by
// the stream's name, as the monitoring ports httpAddrs (/jsz) report them: the
// first that names a leader has the say (they differ only during an
// election). A stream with no leader is left out.
func Leaders(httpAddrs ...string) (map[string]string, error) {
	leaders := map[string]string{}
	for _, addr := range httpAddrs {
		var jsz struct {
			Accounts []struct {
				Streams []struct {
					Name    string `json:"name"`
					Cluster struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		resp, err := monitor.Get("http://" + addr + "/jsz?accounts=true&streams=true")
		if err != nil {
			return nil, err
		}
		err = json.NewDecoder(resp.Body).Decode(&jsz)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s/jsz: %w", addr, err)
		}
		for _, a := range jsz.Accounts {
			for _, s := range a.Streams {
				if _, ok := leaders[s.Name]; !ok && s.Cluster.Leader != "" {
					leaders[s.Name] = s.Cluster.Leader
				}
			}
		}
	}
	return leaders, nil
}
