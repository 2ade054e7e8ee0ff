package main

// Cluster mode: with -peers, the demo is one member of a cluster of demos
// (one per machine, or several on 127.0.0.1) and runs the cluster-scoped
// worker cluster_singleton on exactly one of them at a time.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bgworker/bgworker/actors"
	"github.com/bgworker/bgworker/runtime"
	"github.com/bgworker/bgworker/runtime/cluster"
)

// Singleton is the name of the demo's cluster-scoped worker.
const Singleton = "cluster_singleton"

func init() {
	cluster.MustRegister(actors.Spec{Name: Singleton, Restart: actors.Fixed(time.Second), StopTimeout: 200 * time.Millisecond,
		Props: singleton})
}

// singleton logs where it runs, and under which fencing token, once a
// second; a request with a StringValue (a protobuf message, which crosses
// the bridge and the cluster alike) is answered with "member token pid".
func singleton(w actors.Worker) *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) {
		token, _ := cluster.Token(w)
		switch ctx.Message().(type) {
		case *actor.Started:
			w.Logger().Info("cluster_singleton: running here", "member", cluster.Member(w), "token", token)
			ctx.SetReceiveTimeout(time.Second)
		case *actor.ReceiveTimeout:
			w.Logger().Info("cluster_singleton: still running", "member", cluster.Member(w), "token", token)
		case *wrapperspb.StringValue:
			ctx.Respond(wrapperspb.String(fmt.Sprintf("%s %d %d", cluster.Member(w), token, os.Getpid())))
		case *actors.Terminate:
			ctx.Stop(ctx.Self())
		}
	})
}

// clusterFlags are the flags of cluster mode.
type clusterFlags struct {
	member, bind, peers string
}

func addClusterFlags(fs *flag.FlagSet) *clusterFlags {
	f := &clusterFlags{}
	fs.StringVar(&f.member, "member", "", "this member's name in a cluster (default: -bind)")
	fs.StringVar(&f.bind, "bind", "", "host:port of this member's cluster endpoint; only this address is bound")
	fs.StringVar(&f.peers, "peers", "", "every member's -bind, comma-separated, the same list on each member (itself included); empty = no cluster")
	return f
}

func (f *clusterFlags) validate() error {
	switch {
	case f.peers == "" && (f.bind != "" || f.member != ""):
		return errors.New("-bind and -member need -peers")
	case f.peers != "" && f.bind == "":
		return errors.New("-peers needs -bind (this member's address, one of the peers)")
	}
	return nil
}

// newCluster prepares the runtime to be a member, or returns nil without
// -peers. It must run before rt.Start.
func newCluster(f *clusterFlags, rt *runtime.Runtime, log *slog.Logger) (*cluster.Cluster, error) {
	if f.peers == "" {
		return nil, nil
	}
	return cluster.New(rt, cluster.Config{Name: f.member, Bind: f.bind, Peers: strings.Split(f.peers, ","), Logger: log})
}

// startCluster joins the cluster once recovery has finished.
func startCluster(ctx context.Context, cl *cluster.Cluster, log *slog.Logger) error {
	if cl == nil {
		return nil
	}
	if err := cl.Start(ctx); err != nil {
		return err
	}
	log.Info("bgwdemo: joined the cluster", "member", cl.Name(), "status", "GET /cluster")
	return nil
}

// stopCluster leaves the cluster before the runtime shuts down, so that
// the singleton starts on another member at once.
func stopCluster(cl *cluster.Cluster, log *slog.Logger) {
	if cl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Shutdown(ctx); err != nil {
		log.Error("bgwdemo: leave the cluster", "err", err)
	}
}
