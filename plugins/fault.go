package plugins

import (
	"errors"
	"fmt"
)

// FaultKind classifies what went wrong inside a plugin.
type FaultKind string

// The kinds of fault.
const (
	FaultTrap        FaultKind = "trap"         // the module trapped (unreachable, bad memory access, …)
	FaultTimeout     FaultKind = "timeout"      // the call outran Limits.Timeout
	FaultMemory      FaultKind = "memory"       // the module hit Limits.MemoryPages
	FaultStack       FaultKind = "stack"        // a call went over limits.call_depth or limits.stack_bytes
	FaultOutput      FaultKind = "malformed"    // the result does not follow the ABI
	FaultOutputLimit FaultKind = "output-limit" // the result is larger than Limits.MaxOutputBytes
	FaultGuest       FaultKind = "guest-error"  // the plugin reported an error
	FaultLogLimit    FaultKind = "log-limit"    // the call asked to log over 16 times its budget
	FaultQuarantined FaultKind = "quarantined"  // too many consecutive faults; reload to resume
)

// ErrPluginFault is matched by every *PluginFault.
var ErrPluginFault = errors.New("batpak: plugin fault")

// PluginFault is a failed plugin call. The instance that failed is
// discarded; the host and the store are unaffected.
type PluginFault struct {
	Plugin  string
	Version string
	Kind    FaultKind
	Cause   error
}

func (f *PluginFault) Error() string {
	return fmt.Sprintf("batpak: plugin %s@%s: %s: %v", f.Plugin, f.Version, f.Kind, f.Cause)
}

// Unwrap returns the cause.
func (f *PluginFault) Unwrap() error { return f.Cause }

// Is reports ErrPluginFault.
func (f *PluginFault) Is(target error) bool { return target == ErrPluginFault }

// LoadError is a plugin refused at load: bad manifest, digest mismatch,
// wrong ABI version, missing exports, a module that does not compile.
type LoadError struct {
	Plugin string
	Reason string
	Cause  error
}

func (e *LoadError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("batpak: plugin %s refused: %s: %v", e.Plugin, e.Reason, e.Cause)
	}
	return fmt.Sprintf("batpak: plugin %s refused: %s", e.Plugin, e.Reason)
}

// Unwrap returns the cause.
func (e *LoadError) Unwrap() error { return e.Cause }

// errOutputLimit marks an answer a check refuses for its size, not its
// form: the fault is FaultOutputLimit, not FaultOutput.
var errOutputLimit = errors.New("output over its limit")
