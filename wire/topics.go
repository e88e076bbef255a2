package wire

import "fmt"

// Streams a bridge publishes readings on.
const (
	StreamEnv = "env"
	StreamGPS = "gps"
)

// Payloads of the status topic: the birth message and the MQTT will.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// QoS is the quality of service of every message in the contract: at least once.
const QoS = 1

// Node names one bridge's place in the topic tree.
type Node struct {
	Prefix string
	Site   string
	Node   string
}

// Validate checks every part of the name against the contract's name rules.
func (n Node) Validate() error {
	for _, p := range []struct{ what, name string }{{"prefix", n.Prefix}, {"site", n.Site}, {"node", n.Node}} {
		if err := ValidateName(p.what, p.name); err != nil {
			return err
		}
	}
	return nil
}

// Root is <prefix>/<site>/<node>, the subtree a bridge owns.
func (n Node) Root() string { return fmt.Sprintf("%s/%s/%s", n.Prefix, n.Site, n.Node) }

// Status is the retained online/offline topic, also the bridge's MQTT will.
func (n Node) Status() string { return n.Root() + "/status" }

// Live is the retained topic of a stream's latest reading.
func (n Node) Live(stream string) string { return n.Root() + "/" + stream }

// Backlog is the never-retained topic for readings replayed after an outage.
func (n Node) Backlog(stream string) string { return n.Root() + "/backlog/" + stream }

// Health is the retained bridge health topic.
func (n Node) Health() string { return n.Root() + "/health" }

// AllReadings is the filter a reader subscribes to for the whole farm.
func AllReadings(prefix string) string { return prefix + "/#" }

// ClientID is the MQTT client identifier of a node's bridge: stable, so that a
// restarted bridge takes over its own session, and unique per site and node.
// ':' cannot occur in a name, so no two nodes share one.
func (n Node) ClientID() string { return "bridge:" + n.Site + ":" + n.Node }

// Names of the sensors in Health.SensorErrors.
const (
	SensorBME280  = "bme280"
	SensorPA1010D = "pa1010d"
)
