package wire

// Home Assistant's MQTT integration, as far as the farm meets it: the bridge
// publishes discovery configs and listens to Home Assistant's birth message;
// the broker's ACL grants exactly that.
const (
	// HADiscoveryPrefix is Home Assistant's default discovery prefix, the
	// first level of every discovery topic.
	HADiscoveryPrefix = "homeassistant"
	// HAStatusTopic carries Home Assistant's birth (HAOnline) and will
	// ("offline"). It is Home Assistant's default birth topic, which does not
	// follow a changed discovery prefix; bridges listen to it to re-send
	// their discovery when Home Assistant (re)starts.
	HAStatusTopic = HADiscoveryPrefix + "/status"
	// HAOnline is Home Assistant's birth payload.
	HAOnline = "online"
)

// DiscoveryID is the Home Assistant discovery node id of a bridge:
// <prefix>_<site>_<node>, e.g. sensorfarm_farm1_pizero-01. A bridge may publish
// exactly the topics homeassistant/<component>/<DiscoveryID>/..., that is
//
//	homeassistant/<component>/<DiscoveryID>/<object_id>/config   (per entity)
//	homeassistant/device/<DiscoveryID>/config                    (per device)
//
// and anything else below that level. The id is one whole topic level:
// homeassistant/sensor/sensorfarm_farm1_pizero-01x/... belongs to another
// node. Home Assistant accepts [a-zA-Z0-9_-] there, which every name
// satisfies. Because '_' may also occur inside a site or node name, two nodes
// could share an id (site a_b node c, and site a node b_c): the broker refuses
// a users file with two such bridges.
func DiscoveryID(prefix, site, node string) string {
	return prefix + "_" + site + "_" + node
}

// DiscoveryID is the node's Home Assistant discovery node id.
func (n Node) DiscoveryID() string { return DiscoveryID(n.Prefix, n.Site, n.Node) }

// DiscoveryConfig is the topic of one entity's discovery config:
// <discoveryPrefix>/<component>/<DiscoveryID>/<objectID>/config.
func (n Node) DiscoveryConfig(discoveryPrefix, component, objectID string) string {
	return discoveryPrefix + "/" + component + "/" + n.DiscoveryID() + "/" + objectID + "/config"
}

// Field is the optional per-field topic of a live reading,
// <prefix>/<site>/<node>/<stream>/<field>: one plain value, retained, for
// tools that cannot parse JSON. field is the payload's JSON key.
func (n Node) Field(stream, field string) string { return n.Live(stream) + "/" + field }
