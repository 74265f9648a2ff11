// Package casmodel is the porcupine model the cluster's nemesis tests
// check histories against: each entity is a register holding its event
// count (last clock + 1, 0 for none), changed by compare-and-set appends
// and observed by linearizable reads. The in-process nemesis
// (server/cluster) and the process nemesis (cmd/batpak) share it.
package casmodel
