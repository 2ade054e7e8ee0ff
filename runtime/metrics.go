package runtime

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/bgworker/bgworker/runtime/internal/launch"
)

// metrics are the runtime's Prometheus metrics, on a registry it owns (or
// the one in Config.Registry). Labels are bounded: worker is the name of a
// registered worker or the type of a dynamic one; reason is one of the
// Reason constants or signal:NAME; never a pid.
type metrics struct {
	gatherer       prometheus.Gatherer
	workers        *prometheus.GaugeVec
	starts         *prometheus.CounterVec
	exits          *prometheus.CounterVec
	crashes        *prometheus.CounterVec
	restarts       *prometheus.CounterVec
	backoff        *prometheus.GaugeVec
	readyTime      *prometheus.HistogramVec
	phase          prometheus.Gauge
	pending        prometheus.Gauge
	slotsInUse     prometheus.Gauge
	slotsMax       prometheus.Gauge
	protocolErrors prometheus.Counter
	undeliverable  prometheus.Counter

	poolIdle     prometheus.Gauge
	poolStarting prometheus.Gauge
	idleLost     prometheus.Counter
	poolTarget   prometheus.Gauge

	upgrades          prometheus.Counter
	buildInfo         *prometheus.GaugeVec
	resets            prometheus.Counter
	resetSeconds      prometheus.Histogram
	segmentBytes      prometheus.Gauge
	segmentGeneration prometheus.Gauge
}

const ns = "bgworker"

func newMetrics(rt *Runtime, reg *prometheus.Registry) *metrics {
	m := &metrics{
		workers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "workers",
			Help: "Workers by state."}, []string{"state"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "worker", Name: "starts_total",
			Help: "Worker processes spawned, by worker (registered name or dynamic type)."}, []string{"worker"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "worker", Name: "exits_total",
			Help: "Worker process exits, by worker and reason."}, []string{"worker", "reason"}),
		crashes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "worker", Name: "crashes_total",
			Help: "Worker process exits counted as crashes, by worker and reason."}, []string{"worker", "reason"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "worker", Name: "restarts_total",
			Help: "Worker restarts (starts after the first), by worker."}, []string{"worker"}),
		backoff: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "worker", Name: "backoff_seconds",
			Help: "The wait before the scheduled restart, by worker; zero when none is scheduled."}, []string{"worker"}),
		readyTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "worker", Name: "spawn_ready_seconds",
			Help:    "Time from the start of a worker to its ready report, by worker.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"worker"}),
		phase: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "phase",
			Help: "Current start phase: 0 none, 1 postmaster_start, 2 consistent_state, 3 recovery_finished."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "pending_starts",
			Help: "Workers waiting in the server loop's start queue."}),
		slotsInUse: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "slots_in_use",
			Help: "Workers that are not stopped or failed (counted against max_workers)."}),
		slotsMax: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "slots_max",
			Help: "Config.MaxWorkers."}),
		protocolErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "protocol_errors_total",
			Help: "Bridge protocol violations; each killed its child."}),
		undeliverable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "undeliverable_total",
			Help: "Messages to a worker that was not running."}),
	}
	m.resets = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "shmem", Name: "resets_total",
		Help: "All-for-one resets of the shared-memory group."})
	m.resetSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "shmem", Name: "reset_duration_seconds",
		Help:    "Time from a shared-memory worker's crash until every member runs on the new segment.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	m.segmentBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "shmem", Name: "segment_bytes",
		Help: "Size of the current shared segment."})
	m.segmentGeneration = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "shmem", Name: "generation",
		Help: "Generation of the current shared segment; +1 per reset."})
	m.poolIdle = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "pool", Name: "idle_children",
		Help: "Warm-pool children handshaken and waiting for a worker."})
	m.poolStarting = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "pool", Name: "starting_children",
		Help: "Warm-pool children spawned and not yet idle."})
	m.idleLost = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "pool", Name: "idle_lost_total",
		Help: "Idle children that died before getting a worker (replaced, no worker affected)."})
	m.poolTarget = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "pool", Name: "target_children",
		Help: "Config.WarmPool."})
	m.poolTarget.Set(float64(rt.cfg.WarmPool))
	m.upgrades = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "upgrades_total",
		Help: "In-place upgrades completed: new images of the host that adopted every worker."})
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "The running build: 1, with its version as the label."}, []string{"version"})
	m.buildInfo.WithLabelValues(rt.cfg.Version).Set(1)
	reg.MustRegister(m.upgrades, m.buildInfo)
	reg.MustRegister(m.poolIdle, m.poolStarting, m.idleLost, m.poolTarget)
	reg.MustRegister(m.resets, m.resetSeconds, m.segmentBytes, m.segmentGeneration)
	reg.MustRegister(m.workers, m.starts, m.exits, m.crashes, m.restarts, m.backoff, m.readyTime, m.phase, m.pending,
		m.slotsInUse, m.slotsMax, m.protocolErrors, m.undeliverable)
	traffic := func(get func(launch.Traffic) uint64) func() float64 {
		return func() float64 {
			f := rt.traffic.Load()
			if f == nil {
				return 0
			}
			return float64(get((*f)()))
		}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "frames_received_total",
			Help: "Frames received from children."}, traffic(func(t launch.Traffic) uint64 { return t.FramesIn })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "frames_sent_total",
			Help: "Frames sent to children."}, traffic(func(t launch.Traffic) uint64 { return t.FramesOut })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "received_bytes_total",
			Help: "Bytes received from children."}, traffic(func(t launch.Traffic) uint64 { return t.BytesIn })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "sent_bytes_total",
			Help: "Bytes sent to children."}, traffic(func(t launch.Traffic) uint64 { return t.BytesOut })),
	)
	if reg != nil && rt.cfg.Registry == nil {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m.gatherer = reg
	m.slotsMax.Set(float64(rt.cfg.MaxWorkers))
	for _, s := range States() {
		m.workers.WithLabelValues(s.String())
	}
	return m
}

// crashReasons are the crash reasons whose counters exist from a
// worker's registration on, at zero, so that rate() and increase() work
// from the first scrape (Prometheus' guidance on known label values):
// every fixed crash reason and the commonest signals.
var crashReasons = [...]string{ReasonExit2, ReasonExitOther, ReasonNoGoodbye, ReasonStartTimeout, ReasonHeartbeat,
	ReasonProtocol, ReasonSpawnFailed, ReasonOOMKilled, reasonSignalPrefix + "KILL", reasonSignalPrefix + "SEGV", reasonSignalPrefix + "ABRT"}

// known creates the worker's counters at zero.
func (m *metrics) known(label string) {
	m.starts.WithLabelValues(label)
	m.restarts.WithLabelValues(label)
	for _, r := range crashReasons {
		m.crashes.WithLabelValues(label, r)
	}
}

// transition counts a worker's move from one state to another (from zero
// for a new worker).
func (m *metrics) transition(label string, from, to WorkerState, restart bool, backoff time.Duration) {
	if from != 0 {
		m.workers.WithLabelValues(from.String()).Dec()
	}
	m.workers.WithLabelValues(to.String()).Inc()
	switch to {
	case Starting:
		m.starts.WithLabelValues(label).Inc()
		if restart {
			m.restarts.WithLabelValues(label).Inc()
		}
		m.backoff.WithLabelValues(label).Set(0)
	case Pending:
		if backoff > 0 {
			m.backoff.WithLabelValues(label).Set(backoff.Seconds())
		}
	}
}

// leave takes a worker out of the per-state counts.
func (m *metrics) leave(state WorkerState) { m.workers.WithLabelValues(state.String()).Dec() }

// table sets the table-wide gauges.
func (m *metrics) table(inUse, pending int) {
	m.slotsInUse.Set(float64(inUse))
	m.pending.Set(float64(pending))
}

func (m *metrics) pool(idle, starting int) {
	m.poolIdle.Set(float64(idle))
	m.poolStarting.Set(float64(starting))
}

func (m *metrics) segment(gen uint64, bytes int) {
	m.segmentBytes.Set(float64(bytes))
	m.segmentGeneration.Set(float64(gen))
}

func (m *metrics) exit(label string, ex Exit) {
	m.exits.WithLabelValues(label, ex.Reason).Inc()
	if ex.Crash {
		m.crashes.WithLabelValues(label, ex.Reason).Inc()
	}
}

func (m *metrics) ready(label string, d time.Duration) {
	m.readyTime.WithLabelValues(label).Observe(d.Seconds())
}

// carried lists the counters that an in-place upgrade carries into the new
// image, by name.
func (m *metrics) carried() map[string]prometheus.Collector {
	return map[string]prometheus.Collector{
		"starts": m.starts, "exits": m.exits, "crashes": m.crashes, "restarts": m.restarts,
		"protocol_errors": m.protocolErrors, "undeliverable": m.undeliverable, "resets": m.resets,
		"idle_lost": m.idleLost, "upgrades": m.upgrades,
	}
}

// counters returns the values of the carried counters.
func (m *metrics) counters() []counterState {
	var out []counterState
	for name, c := range m.carried() {
		ch := make(chan prometheus.Metric, 256)
		go func() { c.Collect(ch); close(ch) }()
		for pm := range ch {
			var d dto.Metric
			if pm.Write(&d) != nil || d.Counter == nil {
				continue
			}
			labels := map[string]string{}
			for _, lp := range d.Label {
				labels[lp.GetName()] = lp.GetValue()
			}
			out = append(out, counterState{Name: name, Labels: labels, Value: d.Counter.GetValue()})
		}
	}
	return out
}

// restore adds the values of an earlier image's counters.
func (m *metrics) restore(cs []counterState) {
	carried := m.carried()
	for _, c := range cs {
		switch v := carried[c.Name].(type) {
		case *prometheus.CounterVec:
			if ctr, err := v.GetMetricWith(c.Labels); err == nil {
				ctr.Add(c.Value)
			}
		case prometheus.Counter:
			v.Add(c.Value)
		}
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if c.Write(&d) != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}
