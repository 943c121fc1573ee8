// Command coredns is cluster DNS for the node-marked tests: CoreDNS as a library with only
// the plugins a test cluster's Corefile uses (no cloud backends), so the build stays small.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// Directives run in this order; every name must be one of the plugins imported above.
var directives = []string{"errors", "log", "health", "ready", "cache", "kubernetes"}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
