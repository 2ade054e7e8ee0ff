package actors

import (
	"slices"
	"sync"
)

// The registry of workers registered at init time, like the list that
// shared_preload_libraries builds in PostgreSQL. It is the one piece of
// package state in this module, because Go's init() has nowhere else to
// put it; it is closed by the first call to Registered, after which it is
// read-only.
var registry struct {
	sync.Mutex
	specs  []Spec
	auto   []bool // auto[i]: specs[i] came from Register, not Define
	byName map[string]int
	closed bool
}

// Register adds a worker to be started by every runtime of this binary. Call
// it from init(), the way a PostgreSQL module calls RegisterBackgroundWorker
// from _PG_init. It returns a *SpecError wrapping ErrInvalidSpec,
// ErrAlreadyRegistered (the first registration is kept) or
// ErrRegistrationClosed (a runtime has already read the registry: start the
// worker dynamically with Runtime.StartWorker instead).
func Register(spec Spec) error { return add(spec, true) }

// Define adds worker code that is not started by itself but can be started
// dynamically: a spec passed to Runtime.StartWorker names it in its Type
// (PostgreSQL's bgw_library_name and bgw_function_name). The child process
// finds the code by that name, which is why dynamic workers cannot carry a
// Run or Props of their own: a function cannot cross exec. Errors are those
// of Register.
func Define(spec Spec) error { return add(spec, false) }

func add(spec Spec, auto bool) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	spec.Regions = slices.Clone(spec.Regions)
	spec.Arg = slices.Clone(spec.Arg)
	registry.Lock()
	defer registry.Unlock()
	if registry.closed {
		return &SpecError{Name: spec.Name, Reason: "Register called after the registry was read", Err: ErrRegistrationClosed}
	}
	if registry.byName == nil {
		registry.byName = map[string]int{}
	}
	if _, dup := registry.byName[spec.Name]; dup {
		return &SpecError{Name: spec.Name, Reason: "a worker of that name is registered", Err: ErrAlreadyRegistered}
	}
	registry.byName[spec.Name] = len(registry.specs)
	registry.specs = append(registry.specs, spec)
	registry.auto = append(registry.auto, auto)
	return nil
}

// MustRegister is Register that panics on error, for init() functions where
// a bad spec is a programming error.
func MustRegister(spec Spec) {
	if err := Register(spec); err != nil {
		panic(err)
	}
}

// Registered returns the registered workers in registration order and
// closes the registry: later calls to Register fail with
// ErrRegistrationClosed. The runtime calls it once when it is created.
func Registered() []Spec {
	registry.Lock()
	defer registry.Unlock()
	registry.closed = true
	var out []Spec
	for i, s := range registry.specs {
		if registry.auto[i] {
			out = append(out, s)
		}
	}
	return out
}

// Lookup returns the worker registered or defined with the given name. A child process
// uses it to find the worker it was assigned, as PostgreSQL's EXEC_BACKEND
// finds a worker's entry point by library and function name.
func Lookup(name string) (Spec, bool) {
	registry.Lock()
	defer registry.Unlock()
	i, ok := registry.byName[name]
	if !ok {
		return Spec{}, false
	}
	return registry.specs[i], true
}

// MustDefine is Define that panics on error.
func MustDefine(spec Spec) {
	if err := Define(spec); err != nil {
		panic(err)
	}
}

// All returns every worker registered or defined, in registration order,
// without closing the registry. The runtime uses it to size shared memory
// for the code that dynamic workers may run.
func All() []Spec {
	registry.Lock()
	defer registry.Unlock()
	return slices.Clone(registry.specs)
}
