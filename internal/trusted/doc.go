// Package trusted marks the contexts of writes that batpak's own packages
// make to record what the write gate must not be able to refuse (the audit
// record of a policy bypass). core.AppendSystem asks the store's Admission
// about every system record except those written with a marked context.
//
// The marker cannot be forged from outside this module: the key type is
// unexported here, and Go refuses to compile an import of an internal
// package from another module. Only packages of batpak (core, policy, …)
// can mark a context, so application code cannot use AppendSystem to go
// around the gate.
package trusted
