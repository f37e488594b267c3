// The go-plugin peer benchmark: starts the plugin binary the way a go-plugin host does
// (process start + handshake + dispense), then times warm calls of the one method over
// net/rpc and over gRPC. Prints one JSON line.
//
//	go run ./bench -plugin ./metric-plugin [-quick]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"dax.bench/peers/goplugin/shared"
)

func start(path string, proto plugin.Protocol) (*plugin.Client, shared.MetricProvider, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		Plugins:          plugin.PluginSet{shared.PluginName: &shared.MetricPlugin{}},
		Cmd:              exec.Command(path, string(proto)),
		AllowedProtocols: []plugin.Protocol{proto},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off}),
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	raw, err := rpcClient.Dispense(shared.PluginName)
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	return client, raw.(shared.MetricProvider), nil
}

func call(p shared.MetricProvider) {
	a, err := p.RunQuery("value:1")
	if err != nil || a.Value != 1 {
		fail("RunQuery(value:1) = %+v, %v", a, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-plugin bench: "+format+"\n", args...)
	os.Exit(1)
}

func p50(samples []time.Duration) time.Duration {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	return samples[len(samples)/2]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// startup: process start + handshake + dispense + first call, then kill; p50 over n.
func startup(path string, proto plugin.Protocol, n int) time.Duration {
	samples := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		client, p, err := start(path, proto)
		if err != nil {
			fail("starting %s (%s): %v", path, proto, err)
		}
		samples = append(samples, time.Since(t))
		call(p)
		client.Kill()
	}
	return p50(samples)
}

// warm: each call timed on its own (a call is tens of µs, so the clock's cost is noise).
func warm(path string, proto plugin.Protocol, n int) (p50us, meanus float64) {
	client, p, err := start(path, proto)
	if err != nil {
		fail("starting %s (%s): %v", path, proto, err)
	}
	defer client.Kill()
	for i := 0; i < n/10+100; i++ {
		call(p)
	}
	samples := make([]time.Duration, 0, n)
	begin := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		call(p)
		samples = append(samples, time.Since(t))
	}
	total := time.Since(begin)
	return us(p50(samples)), us(total) / float64(n)
}

func main() {
	path := flag.String("plugin", "", "path of the built plugin binary (go build -o ... ./plugin)")
	quick := flag.Bool("quick", false, "fewer calls and starts")
	flag.Parse()
	if *path == "" {
		fail("-plugin PATH is required")
	}
	calls, starts := 20000, 30
	if *quick {
		calls, starts = 3000, 10
	}
	version := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/hashicorp/go-plugin" {
				version = d.Version
			}
		}
	}
	rpcP50, rpcMean := warm(*path, plugin.ProtocolNetRPC, calls)
	grpcP50, grpcMean := warm(*path, plugin.ProtocolGRPC, calls)
	out := map[string]any{
		"go":                          runtime.Version(),
		"go_plugin":                   version,
		"calls":                       calls,
		"starts":                      starts,
		"netrpc_warm_call_p50_us":     rpcP50,
		"netrpc_warm_call_mean_us":    rpcMean,
		"grpc_warm_call_p50_us":       grpcP50,
		"grpc_warm_call_mean_us":      grpcMean,
		"netrpc_process_start_p50_ms": ms(startup(*path, plugin.ProtocolNetRPC, starts)),
		"grpc_process_start_p50_ms":   ms(startup(*path, plugin.ProtocolGRPC, starts)),
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
