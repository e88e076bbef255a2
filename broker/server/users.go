package server

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/sensorfarm/sensorfarm/broker/auth"
)

// holders tells the auth hook who holds a client id: mochi's client list has
// every connected client and every persistent session, those restored from the
// store at start included, each with the user name it connected with (mochi's
// storage keeps it: storage.Client.Username).
func holders(m *mqtt.Server) func(string) auth.Holder {
	return func(id string) auth.Holder {
		cl, ok := m.Clients.Get(id)
		if !ok {
			return auth.Holder{}
		}
		return auth.Holder{User: string(cl.Properties.Username), Held: true}
	}
}

// usersWatchEvery is how often the users file is looked at for a change (a
// stat): on Kubernetes the kubelet updates the Secret's file in place and
// nobody sends SIGHUP. The kubelet itself takes up to a minute or so to
// update the file, so a couple of seconds more add nothing noticeable.
const usersWatchEvery = 2 * time.Second
