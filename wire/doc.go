// Package wire is the sensorfarm wire contract in code: the name rules, the
// topic tree and the JSON payloads that the bridge writes, the broker guards and
// every consumer reads. Both binaries import it so that the contract is written
// once; ../shared/CONTRACT.md is its prose.
package wire
