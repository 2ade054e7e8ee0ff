package cluster

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgworker/bgworker/runtime"
)

// MemberStatus is one member as this member sees it: a row of GET
// /cluster's "members".
type MemberStatus struct {
	ID      string    `json:"id"` // protoactor's member id; new for each process ("" until first heard)
	Name    string    `json:"name"`
	Address string    `json:"address"`
	Alive   bool      `json:"alive"`
	Since   time.Time `json:"since"` // when it came up (or went down) in this view; for this member, its start
}

// Placement is where one cluster-scoped worker is held, as this member
// sees it: a row of GET /cluster's "placements".
type Placement struct {
	Worker   string              `json:"worker"`
	Member   string              `json:"member"` // the holder's name; "" = placed nowhere
	MemberID string              `json:"member_id"`
	Address  string              `json:"address"`
	Token    uint64              `json:"token"` // the fencing token of the placement
	State    runtime.WorkerState `json:"state"` // on the holder, as its heartbeats report it (zero = unknown)
	Here     bool                `json:"-"`
	PID      int                 `json:"-"` // the process on this member, when Here
}

// snapshot is the member actor's published status.
type snapshot struct {
	self       memberRef
	members    []MemberStatus
	placements map[string]Placement
	order      []string
}

// Members returns every member this one knows of (for static peers, every
// configured peer), itself first.
func (c *Cluster) Members() []MemberStatus {
	return append([]MemberStatus(nil), c.snap.Load().members...)
}

// Placements returns where each cluster-scoped worker is held, in Config
// order.
func (c *Cluster) Placements() []Placement {
	s := c.snap.Load()
	out := make([]Placement, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.placements[n])
	}
	return out
}

func (c *Cluster) httpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := c.snap.Load()
		out := struct {
			Members    []MemberStatus `json:"members"`
			Placements []Placement    `json:"placements"`
		}{Members: append([]MemberStatus{}, s.members...), Placements: []Placement{}}
		for _, n := range s.order {
			out.Placements = append(out.Placements, s.placements[n])
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// decorate gives the runtime's Workers one row per cluster-scoped worker,
// with Member set to its holder: the local row on the holder, a row with
// no pid (the holder's state, as its heartbeats report it) elsewhere.
func (c *Cluster) decorate(rows []runtime.WorkerInfo) []runtime.WorkerInfo {
	s := c.snap.Load()
	seen := map[string]bool{}
	out := rows[:0]
	for _, r := range rows {
		pl, ok := s.placements[r.Name]
		if !ok {
			out = append(out, r)
			continue
		}
		seen[r.Name] = true
		if pl.Here {
			r.Member = pl.Member
			out = append(out, r)
			continue
		}
		out = append(out, c.remoteRow(r.Name, pl))
	}
	for _, n := range s.order {
		if !seen[n] {
			out = append(out, c.remoteRow(n, s.placements[n]))
		}
	}
	return out
}

func (c *Cluster) remoteRow(name string, pl Placement) runtime.WorkerInfo {
	st := pl.State
	if st == 0 {
		st = runtime.Registered
	}
	return runtime.WorkerInfo{Name: name, Type: name, State: st, Dynamic: true, Member: pl.Member}
}

// metrics are the cluster's Prometheus metrics, on the runtime's registry.
type metrics struct {
	members     prometheus.Gauge
	placements  prometheus.Gauge
	failovers   *prometheus.CounterVec
	changes     *prometheus.CounterVec
	leaseLosses *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bgworker", Subsystem: "cluster", Name: "members",
			Help: "Cluster members up in this member's view, itself included."}),
		placements: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bgworker", Subsystem: "cluster", Name: "placements",
			Help: "Cluster-scoped workers whose lease this member holds."}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bgworker", Subsystem: "cluster", Name: "failovers_total",
			Help: "Leases this member took over after the previous holder's ran out (it died or was cut off), by worker."}, []string{"worker"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bgworker", Subsystem: "cluster", Name: "placement_changes_total",
			Help: "Placements begun or ended on this member, by worker."}, []string{"worker"}),
		leaseLosses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bgworker", Subsystem: "cluster", Name: "lease_losses_total",
			Help: "Workers stopped on this member because a quorum stopped renewing their lease, by worker."}, []string{"worker"}),
	}
	reg.MustRegister(m.members, m.placements, m.failovers, m.changes, m.leaseLosses)
	return m
}
