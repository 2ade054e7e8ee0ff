package runtime

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the runtime's Prometheus metrics, on a registry it owns (or
// the one in Config.Registry). Labels are bounded: worker is the name of a
// registered worker or the type of a dynamic one; reason is one of the
// Reason constants or signal:NAME; never a pid.
type metrics struct {
	rt             *Runtime
	gatherer       prometheus.Gatherer
	workers        *prometheus.GaugeVec
	starts         *prometheus.CounterVec
	exits          *prometheus.CounterVec
	crashes        *prometheus.CounterVec
	restarts       *prometheus.CounterVec
	backoff        *prometheus.GaugeVec
	ready          *prometheus.HistogramVec
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

	resets            prometheus.Counter
	resetSeconds      prometheus.Histogram
	segmentBytes      prometheus.Gauge
	segmentGeneration prometheus.Gauge
}

const ns = "bgworker"

func newMetrics(rt *Runtime, reg *prometheus.Registry) *metrics {
	m := &metrics{
		rt: rt,
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
		ready: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "worker", Name: "spawn_ready_seconds",
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
	reg.MustRegister(m.poolIdle, m.poolStarting, m.idleLost, m.poolTarget)
	reg.MustRegister(m.resets, m.resetSeconds, m.segmentBytes, m.segmentGeneration)
	reg.MustRegister(m.workers, m.starts, m.exits, m.crashes, m.restarts, m.backoff, m.ready, m.phase, m.pending,
		m.slotsInUse, m.slotsMax, m.protocolErrors, m.undeliverable)
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "frames_received_total",
			Help: "Frames received from children."}, func() float64 {
			return float64(rt.bridgeStats(func(p *proc) uint64 { return p.conn.Stats.FramesIn.Load() }, &rt.acc.framesIn))
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "frames_sent_total",
			Help: "Frames sent to children."}, func() float64 {
			return float64(rt.bridgeStats(func(p *proc) uint64 { return p.conn.Stats.FramesOut.Load() }, &rt.acc.framesOut))
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "received_bytes_total",
			Help: "Bytes received from children."}, func() float64 {
			return float64(rt.bridgeStats(func(p *proc) uint64 { return p.conn.Stats.BytesIn.Load() }, &rt.acc.bytesIn))
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "bridge", Name: "sent_bytes_total",
			Help: "Bytes sent to children."}, func() float64 {
			return float64(rt.bridgeStats(func(p *proc) uint64 { return p.conn.Stats.BytesOut.Load() }, &rt.acc.bytesOut))
		}),
	)
	if reg != nil && rt.cfg.Registry == nil {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m.gatherer = reg
	m.slotsMax.Set(float64(rt.cfg.MaxWorkers))
	for _, s := range States {
		m.workers.WithLabelValues(s.String())
	}
	return m
}

func label(s *slot) string {
	if s.dynamic {
		return s.spec.TypeName()
	}
	return s.spec.Name
}

func (m *metrics) observeState(s *slot, from, to WorkerState) {
	if from != 0 {
		m.workers.WithLabelValues(from.String()).Dec()
	}
	m.workers.WithLabelValues(to.String()).Inc()
	switch to {
	case Starting:
		m.starts.WithLabelValues(label(s)).Inc()
		if s.inc > 1 {
			m.restarts.WithLabelValues(label(s)).Inc()
		}
		m.backoff.WithLabelValues(label(s)).Set(0)
	case Pending:
		if !s.nextStart.IsZero() {
			m.backoff.WithLabelValues(label(s)).Set(time.Until(s.nextStart).Seconds())
		}
	}
	if pm := m.rt.pm; pm != nil {
		m.slotsInUse.Set(float64(pm.liveSlots()))
		m.pending.Set(float64(len(pm.queue)))
		m.phase.Set(float64(pm.phase))
		m.rt.phase.Store(uint32(pm.phase))
	}
}

func (m *metrics) observeExit(s *slot, ex Exit) {
	m.exits.WithLabelValues(label(s), ex.Reason).Inc()
	if ex.Crash {
		m.crashes.WithLabelValues(label(s), ex.Reason).Inc()
	}
}

func (m *metrics) observeReady(s *slot, d time.Duration) {
	m.ready.WithLabelValues(label(s)).Observe(d.Seconds())
}
