// Package shared is the plugin interface of the go-plugin peer benchmark, served two ways:
// net/rpc (how Argo Rollouts' metric plugins talk to the controller, as in its
// rollouts-plugin-metric-sample) and gRPC (go-plugin's other protocol).
package shared

import (
	"context"
	"fmt"
	"net/rpc"
	"strconv"
	"strings"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"dax.bench/peers/goplugin/metricpb"
)

// Handshake keeps the plugin binary from being run by hand or by another host.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "DAX_PEER_BENCH_PLUGIN",
	MagicCookieValue: "metric-provider",
}

// PluginName is the one plugin the binary serves.
const PluginName = "metric"

// Answer is a metric query's result: a value, or why there is none.
type Answer struct {
	Value  float64
	NoData string
}

// MetricProvider is the one small method, like dax's `MetricProvider::run_query`.
type MetricProvider interface {
	RunQuery(text string) (Answer, error)
}

// Echo is the plugin's logic, the same as dax's tests/plugins/hello-metrics:
// `value:N` answers N, anything else has no data.
type Echo struct{}

func (Echo) RunQuery(text string) (Answer, error) {
	if v, ok := strings.CutPrefix(text, "value:"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return Answer{}, fmt.Errorf("bad value %q: %w", v, err)
		}
		return Answer{Value: f}, nil
	}
	return Answer{NoData: fmt.Sprintf("no series matches `%s`", text)}, nil
}

// MetricPlugin implements both plugin.Plugin (net/rpc) and plugin.GRPCPlugin; the client's
// AllowedProtocols picks which one a process serves.
type MetricPlugin struct {
	Impl MetricProvider
}

// --- net/rpc ---

// RunArgs and RunResponse travel gob-encoded, as Argo's RPC plugin arguments do.
type RunArgs struct{ Text string }
type RunResponse struct {
	Answer Answer
	Err    string
}

type rpcServer struct{ impl MetricProvider }

func (s *rpcServer) RunQuery(args RunArgs, resp *RunResponse) error {
	a, err := s.impl.RunQuery(args.Text)
	resp.Answer = a
	if err != nil {
		resp.Err = err.Error()
	}
	return nil
}

type rpcClient struct{ c *rpc.Client }

func (c *rpcClient) RunQuery(text string) (Answer, error) {
	var resp RunResponse
	if err := c.c.Call("Plugin.RunQuery", RunArgs{Text: text}, &resp); err != nil {
		return Answer{}, err
	}
	if resp.Err != "" {
		return resp.Answer, fmt.Errorf("%s", resp.Err)
	}
	return resp.Answer, nil
}

func (p *MetricPlugin) Server(*plugin.MuxBroker) (interface{}, error) {
	return &rpcServer{impl: p.Impl}, nil
}

func (p *MetricPlugin) Client(_ *plugin.MuxBroker, c *rpc.Client) (interface{}, error) {
	return &rpcClient{c: c}, nil
}

// --- gRPC ---

type grpcServer struct {
	metricpb.UnimplementedMetricProviderServer
	impl MetricProvider
}

func (s *grpcServer) RunQuery(_ context.Context, q *metricpb.Query) (*metricpb.Answer, error) {
	a, err := s.impl.RunQuery(q.Text)
	if err != nil {
		return nil, err
	}
	return &metricpb.Answer{Value: a.Value, NoData: a.NoData}, nil
}

type grpcClient struct{ c metricpb.MetricProviderClient }

func (c *grpcClient) RunQuery(text string) (Answer, error) {
	a, err := c.c.RunQuery(context.Background(), &metricpb.Query{Text: text})
	if err != nil {
		return Answer{}, err
	}
	return Answer{Value: a.Value, NoData: a.NoData}, nil
}

func (p *MetricPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	metricpb.RegisterMetricProviderServer(s, &grpcServer{impl: p.Impl})
	return nil
}

func (p *MetricPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &grpcClient{c: metricpb.NewMetricProviderClient(c)}, nil
}
