package peers

import (
	"context"
	"errors"
	"net/rpc"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Echo is the plugin's interface: Echo returns its argument, from the
// plugin process.
type Echo interface {
	Echo(b []byte) ([]byte, error)
}

// Handshake is the handshake of the echo plugin. The cookie only tells a
// plugin process from a binary run by hand.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BGWPEERS_PLUGIN",
	MagicCookieValue: "echo",
}

// Protocol versions of the echo plugin: go-plugin chooses the transport by
// the version the host asks for.
const (
	VersionNetRPC = 1
	VersionGRPC   = 2
)

// Kinds are the transports Drive accepts, as named in its commands.
var Kinds = []string{"netrpc", "grpc"}

// ServePlugin serves the echo plugin, over whichever protocol the host
// asked for, and exits, when this process was started as the plugin (the
// handshake's cookie is set). Otherwise it returns at once. Call it first
// in main.
func ServePlugin() {
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		return
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			VersionNetRPC: {"echo": EchoNetRPC{}},
			VersionGRPC:   {"echo": EchoGRPC{}},
		},
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     hclog.NewNullLogger(),
	})
	os.Exit(0)
}

// ---- net/rpc ----

// EchoNetRPC is the echo plugin over net/rpc.
type EchoNetRPC struct{}

// Server returns the plugin side of the net/rpc plugin.
func (EchoNetRPC) Server(*plugin.MuxBroker) (any, error) { return &EchoRPCServer{}, nil }

// Client returns an [Echo] that calls the plugin over c.
func (EchoNetRPC) Client(_ *plugin.MuxBroker, c *rpc.Client) (any, error) {
	return echoRPCClient{c}, nil
}

// EchoRPCServer is the net/rpc service in the plugin process.
type EchoRPCServer struct{}

// Echo answers b with b.
func (EchoRPCServer) Echo(b []byte, out *[]byte) error {
	*out = b
	return nil
}

type echoRPCClient struct{ c *rpc.Client }

func (e echoRPCClient) Echo(b []byte) ([]byte, error) {
	var out []byte
	err := e.c.Call("Plugin.Echo", b, &out)
	return out, err
}

// ---- gRPC ----

// EchoGRPC is the echo plugin over gRPC. The service is registered by hand
// with a grpc.ServiceDesc on wrapperspb.BytesValue, which is what protoc
// would generate for `rpc Echo(BytesValue) returns (BytesValue)`.
type EchoGRPC struct {
	plugin.NetRPCUnsupportedPlugin
}

// echoService is the handler type of the gRPC service; the plugin side
// needs no state.
type echoService interface{}

const echoMethod = "/bgwpeers.Echo/Echo"

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: "bgwpeers.Echo",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if icpt == nil {
				return in, nil
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: echoMethod},
				func(_ context.Context, req any) (any, error) { return req, nil })
		},
	}},
	Metadata: "bgwpeers.proto",
}

// GRPCServer registers the echo service on s.
func (EchoGRPC) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&echoServiceDesc, struct{}{})
	return nil
}

// GRPCClient returns an [Echo] that calls the plugin over c.
func (EchoGRPC) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return echoGRPCClient{ctx: ctx, c: c}, nil
}

type echoGRPCClient struct {
	ctx context.Context // go-plugin's: cancelled when the plugin process exits
	c   *grpc.ClientConn
}

func (e echoGRPCClient) Echo(b []byte) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := e.c.Invoke(e.ctx, echoMethod, wrapperspb.Bytes(b), out); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// clientConfig returns the host side's configuration for kind, starting
// exe as the plugin.
func clientConfig(kind, exe string) (*plugin.ClientConfig, error) {
	cfg := &plugin.ClientConfig{
		HandshakeConfig: Handshake,
		Logger:          hclog.NewNullLogger(),
	}
	switch kind {
	case "netrpc":
		cfg.VersionedPlugins = map[int]plugin.PluginSet{VersionNetRPC: {"echo": EchoNetRPC{}}}
		cfg.AllowedProtocols = []plugin.Protocol{plugin.ProtocolNetRPC}
	case "grpc":
		cfg.VersionedPlugins = map[int]plugin.PluginSet{VersionGRPC: {"echo": EchoGRPC{}}}
		cfg.AllowedProtocols = []plugin.Protocol{plugin.ProtocolGRPC}
	default:
		return nil, errors.New("peers: unknown kind " + kind + " (want netrpc or grpc)")
	}
	return cfg, nil
}
