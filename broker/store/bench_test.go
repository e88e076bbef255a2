package store

import (
	"sync"
	"testing"
)

// BenchmarkJournal is the cost of the one fsynced write per acknowledged
// publish, from one publisher and from 50 at once: pebble commits the
// concurrent ones as a group, one fsync for many.
//
//	go test -run '^$' -bench Journal -benchtime 2000x ./broker/store
func BenchmarkJournal(b *testing.B) {
	for _, publishers := range []int{1, 50} {
		b.Run(map[int]string{1: "one-publisher", 50: "50-publishers"}[publishers], func(b *testing.B) {
			h, opts, err := New(b.TempDir(), true, nil)
			if err != nil {
				b.Fatal(err)
			}
			h.SetOpts(quietLog(), nil)
			if err := h.Init(opts); err != nil {
				b.Fatal(err)
			}
			defer h.Stop()
			cl := persistentClient("bridge")
			pk := inflightPk(1)
			b.ResetTimer()
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := p; i < b.N; i += publishers {
						key, synced, err := h.Begin(cl, pk)
						if err == nil {
							err = h.WaitSynced(synced)
						}
						if err != nil {
							b.Error(err)
							return
						}
						h.Done(key)
					}
				}()
			}
			wg.Wait()
		})
	}
}
