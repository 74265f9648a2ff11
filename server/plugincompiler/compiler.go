package plugincompiler

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/internal/childproc"
	"github.com/batpak-go/batpak/plugins"
)

// The child's environment: envChild names the cache directory (and makes
// the process a child), envMemory its memory limit in bytes.
const (
	envChild  = "BATPAK_PLUGIN_COMPILER_CACHE"
	envMemory = "BATPAK_PLUGIN_COMPILER_MEMORY"
)

// The child's exit codes besides 0 (compiled).
const (
	exitInvalid     = 3 // the module is not valid as written: stderr says why
	exitMemory      = 4 // over the memory limit
	exitUsage       = 5 // started wrongly
	exitNotCompiled = 6 // the rewritten module does not compile: stderr says why
)

// Defaults and ranges of Limits.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMemoryBytes = 1 << 30
	MinTimeout         = time.Second
	MaxTimeout         = 10 * time.Minute
	MinMemoryBytes     = 64 << 20
	MaxMemoryBytes     = 64 << 30
)

// Limits bound one compile.
type Limits struct {
	// Timeout is how long one compile may take, the child's start
	// included (a few milliseconds). 0 means DefaultTimeout; range
	// MinTimeout..MaxTimeout.
	Timeout time.Duration
	// MemoryBytes is how much memory the child's Go runtime may hold
	// (heap, stacks and the runtime's own; the compiled code wazero maps
	// outside the heap is bounded by the module's size). 0 means
	// DefaultMemoryBytes; range MinMemoryBytes..MaxMemoryBytes. A Go guest
	// of 2.7 MB takes about 70 MB and 1.6 s.
	MemoryBytes int64
}

// WithDefaults fills zero fields and checks the ranges.
func (l Limits) WithDefaults() (Limits, error) {
	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	if l.MemoryBytes == 0 {
		l.MemoryBytes = DefaultMemoryBytes
	}
	switch {
	case l.Timeout < MinTimeout || l.Timeout > MaxTimeout:
		return l, fmt.Errorf("plugin compile timeout %v: want %v..%v", l.Timeout, MinTimeout, MaxTimeout)
	case l.MemoryBytes < MinMemoryBytes || l.MemoryBytes > MaxMemoryBytes:
		return l, fmt.Errorf("plugin compile memory %d bytes: want %d..%d", l.MemoryBytes, int64(MinMemoryBytes), int64(MaxMemoryBytes))
	}
	return l, nil
}

// ErrLimit is what a compile over its limits fails with (wrapped, with
// which limit and its value).
var ErrLimit = errors.New("over the server's compile limit")

// ErrUnavailable: this binary did not call RunChild, so it cannot be a
// compiler child.
var ErrUnavailable = errors.New("batpak: this binary cannot compile plugin modules in a child process (its main does not call plugincompiler.RunChild)")

// available is set by RunChild when it returns.
var available atomic.Bool

// Available reports whether RunChild was called in this process (and
// returned), so that New can start this binary as a compiler child.
func Available() bool { return available.Load() }

// Compiler compiles modules in child processes. It is safe for concurrent
// use; each Compile starts a child of its own (the plugin host's callers
// bound how many run at once).
type Compiler struct {
	path   string
	limits Limits
}

// New returns a Compiler that starts this binary as its child, or
// ErrUnavailable, or an error for limits out of range.
func New(l Limits) (*Compiler, error) {
	l, err := l.WithDefaults()
	if err != nil {
		return nil, err
	}
	if !Available() {
		return nil, ErrUnavailable
	}
	path, err := childproc.Self()
	if err != nil {
		return nil, fmt.Errorf("batpak: plugin compiler: %w", err)
	}
	return &Compiler{path: path, limits: l}, nil
}

// Limits returns the compiler's limits (defaults filled in).
func (c *Compiler) Limits() Limits { return c.limits }

// ID names the limits a pass of this Compiler vouches for
// (plugins.HostOptions.CompilerID): a module that compiled within 10
// minutes is given to a Compiler of 30 s again.
func (c *Compiler) ID() string {
	return fmt.Sprintf("child-%v-%d", c.limits.Timeout, c.limits.MemoryBytes)
}

// Compile validates original and compiles rewritten (unless nil) into the
// compiled-code cache in cacheDir in a child process
// (plugins.CompileInto): nil when both passed. A module not valid as
// written fails with plugins.ErrInvalidModule, one that does not compile
// with wazero's reason (both without the goroutine dump of a crash); one
// that goes over the time or memory limit fails with ErrLimit, wrapped; a
// child that cannot be started or dies otherwise fails with what
// happened. Nothing is left running when it returns. It has the
// signature of plugins.HostOptions.Compiler.
func (c *Compiler) Compile(ctx context.Context, cacheDir string, original, rewritten []byte) error {
	tctx, cancel := context.WithTimeout(ctx, c.limits.Timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, c.path)
	cmd.Args = []string{"batpak-plugin-compiler"}
	// One compile takes one core.
	cmd.Env = childproc.Env(os.Environ(), 1, []string{envChild, envMemory},
		envChild+"="+cacheDir, envMemory+"="+strconv.FormatInt(c.limits.MemoryBytes, 10))
	head := binary.BigEndian.AppendUint64(nil, uint64(len(original)))
	cmd.Stdin = io.MultiReader(bytes.NewReader(head), bytes.NewReader(original), bytes.NewReader(rewritten))
	var stderr childproc.Tail
	cmd.Stderr = &stderr
	err := childproc.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case tctx.Err() != nil && ctx.Err() == nil:
		return fmt.Errorf("%w: it took longer than %v", ErrLimit, c.limits.Timeout)
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &exit) && exit.ExitCode() == exitInvalid:
		return fmt.Errorf("%w: %s", plugins.ErrInvalidModule, stderr.Text())
	case errors.As(err, &exit) && exit.ExitCode() == exitNotCompiled:
		return errors.New(stderr.Text())
	case errors.As(err, &exit) && exit.ExitCode() == exitMemory,
		// An allocation the memory limit refused outright (a module
		// declaring 2³²−1 imports, globals, elements or data segments
		// makes the compiler ask for them all at once): the Go runtime
		// dies of it rather than reach the limit's own exit.
		strings.Contains(stderr.FirstLine(), "runtime: out of memory"):
		return fmt.Errorf("%w: it took more than %d MiB of memory", ErrLimit, c.limits.MemoryBytes>>20)
	}
	// A crash: its first line (a panic's or fatal error's message), never
	// the goroutine dump after it, which names the server's source files.
	if msg := stderr.FirstLine(); msg != "" {
		return fmt.Errorf("batpak: the plugin compiler process failed: %w: %s", err, msg)
	}
	return fmt.Errorf("batpak: the plugin compiler process failed: %w", err)
}

// RunChild makes this process a compiler child when it was started as one
// (it then compiles the module on its standard input and exits); otherwise
// it returns at once and marks the binary Available. Call it first in
// main, before anything else runs: a child must not do what the binary
// otherwise does.
func RunChild() {
	dir, ok := os.LookupEnv(envChild)
	if !ok {
		available.Store(true)
		return
	}
	os.Exit(child(dir, os.Getenv(envMemory)))
}

// child validates and compiles the modules on stdin (the original's
// length as 8 bytes big-endian, the original, the rewritten module, if
// any) into the cache in dir, with the Go runtime's memory bounded by
// memory bytes, and returns the exit code.
func child(dir, memory string) int {
	limit, err := strconv.ParseInt(memory, 10, 64)
	if err != nil || limit <= 0 || dir == "" {
		fmt.Fprintln(os.Stderr, "batpak plugin compiler: started without its cache directory or memory limit")
		return exitUsage
	}
	childproc.LimitMemory(limit, "batpak plugin compiler", exitMemory)
	in, err := readAll(os.Stdin, limit)
	if errors.Is(err, errOverLimit) {
		fmt.Fprintf(os.Stderr, "batpak plugin compiler: the module is over the memory limit of %d bytes\n", limit)
		return exitMemory
	}
	if err != nil || len(in) < 8 || binary.BigEndian.Uint64(in) > uint64(len(in)-8) {
		fmt.Fprintln(os.Stderr, "batpak plugin compiler: reading the modules:", err)
		return exitUsage
	}
	n := binary.BigEndian.Uint64(in)
	original, rewritten := in[8:8+n], in[8+n:]
	if len(rewritten) == 0 {
		rewritten = nil
	}
	if err := plugins.CompileInto(context.Background(), dir, original, rewritten); err != nil {
		if errors.Is(err, plugins.ErrInvalidModule) {
			fmt.Fprintln(os.Stderr, strings.TrimPrefix(err.Error(), plugins.ErrInvalidModule.Error()+": "))
			return exitInvalid
		}
		fmt.Fprintln(os.Stderr, err)
		return exitNotCompiled
	}
	return 0
}

// errOverLimit: the input is larger than the memory limit.
var errOverLimit = errors.New("over the memory limit")

// readAll reads f whole, refusing more than limit bytes.
func readAll(f *os.File, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, errOverLimit
	}
	return buf.Bytes(), nil
}
