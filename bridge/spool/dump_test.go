package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// dumpDir describes every record of a spool directory, for failed tests.
func dumpDir(dir string) string {
	var sb strings.Builder
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		g, _, ok := parseSegmentName(e.Name())
		if !ok {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fmt.Fprintln(&sb, e.Name(), len(data))
		for off := 0; off < len(data); {
			typ, body, n, ok := parseRecord(data[off:])
			if !ok {
				fmt.Fprintln(&sb, "  damaged at", off)
				if off = resync(data, off); off < 0 {
					break
				}
				continue
			}
			fmt.Fprint(&sb, "  @", off, " type ", typ, " n ", n)
			switch typ {
			case recData:
				h, _, err := parseData(body, g)
				fmt.Fprintf(&sb, " %+v %v", h, err)
			case recState:
				sn, err := parseSnapshot(body)
				fmt.Fprintf(&sb, " %+v %v", sn, err)
			case recAck:
				_ = parseAck(body, func(r idRange) { fmt.Fprint(&sb, " ", r) })
			case recDict:
				idx, name, _, _ := parseDict(body)
				fmt.Fprint(&sb, " ", idx, " ", name)
			}
			fmt.Fprintln(&sb)
			off += n
		}
	}
	return sb.String()
}
