package server

import "time"

// usersWatchEvery is how often the users file is looked at for a change (a
// stat): on Kubernetes the kubelet updates the Secret's file in place and
// nobody sends SIGHUP. The kubelet itself takes up to a minute or so to
// update the file, so a couple of seconds more add nothing noticeable.
const usersWatchEvery = 2 * time.Second
