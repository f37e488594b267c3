// The plugin binary: serves shared.Echo over net/rpc, or over gRPC when started as
// `metric-plugin grpc` (a go-plugin server picks its protocol itself: gRPC whenever it has a
// GRPCServer, so the host tells it which one through the command line).
package main

import (
	"os"

	"github.com/hashicorp/go-plugin"

	"dax.bench/peers/goplugin/shared"
)

func main() {
	config := &plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		Plugins:         plugin.PluginSet{shared.PluginName: &shared.MetricPlugin{Impl: shared.Echo{}}},
	}
	if len(os.Args) > 1 && os.Args[1] == "grpc" {
		config.GRPCServer = plugin.DefaultGRPCServer
	}
	plugin.Serve(config)
}
