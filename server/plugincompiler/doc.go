// Package plugincompiler compiles tenants' plugin modules in a child
// process bounded in time and memory, for plugins.HostOptions.Compiler.
//
// wazero's optimizing compiler cannot be interrupted, and its time and
// memory are not linear in a module's size: a module of 19 KB of loops
// nested 1,000 deep over 4,000 locals takes 13 s to compile on a 2-core
// machine, and twice as many takes over a minute. In the server's process
// such a compile would hold a core, and as much memory as it likes, for
// as long as it likes. A Compiler runs the compile in a child process — the
// running binary again, started with an environment variable that
// RunChild recognises — which fills the plugin host's compiled-code cache
// and exits; the host then loads the module from the cache. The child is
// killed when it runs past Limits.Timeout or its Go heap and runtime pass
// Limits.MemoryBytes, and dies with the server on Linux.
//
// A binary serves as the child only if its main calls RunChild first;
// Available reports whether it did. cmd/batpak does.
package plugincompiler
