// Package childproc holds what the server's bounded child processes
// share: starting the running binary again as a child that dies with
// its parent (Self, Start), bounding the child's memory from inside
// (LimitMemory), and keeping the start of what it writes to stderr
// (Tail) so that a crash is reported by its first line, never by its
// goroutine dump.
//
// The children are server/plugincompiler's module compiler and
// server/tenantpolicy's policy sandbox: both run code a tenant wrote or
// chose, whose time and memory no check inside the server's process can
// bound, and both end it by ending the child.
package childproc
