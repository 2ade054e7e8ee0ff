package spi

import "github.com/asynkron/protoactor-go/actor"

// NewStoreProps returns the props of the store: a host actor that keeps a
// total per worker, adds every [Fold] to it, and answers [Total] with a
// [Sum]. Spawn it in the host's actor system and expose it as [StoreName].
func NewStoreProps() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &store{totals: map[string]int{}} })
}

// store is the host-side actor; its state is touched only by Receive.
type store struct {
	totals map[string]int
	folds  int
}

func (s *store) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case Fold:
		s.fold(m)
	case *Fold:
		s.fold(*m)
	case Total, *Total:
		sum := Sum{Workers: len(s.totals), Folds: s.folds}
		for _, t := range s.totals {
			sum.Total += t
		}
		ctx.Respond(sum)
	}
}

func (s *store) fold(f Fold) {
	s.totals[f.Worker] += f.Delta
	s.folds++
}
