// CoreDNS with only the plugins the test cluster's DNS needs: the full build imports every
// plugin (and the AWS, Azure and GCP SDKs behind some of them).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/template"
	"github.com/coredns/coredns/coremain"
)

// The order plugins run in (plugin.cfg's order, restricted to the six above).
func init() {
	dnsserver.Directives = []string{"bind", "errors", "log", "cache", "template", "kubernetes"}
}

func main() { coremain.Run() }
