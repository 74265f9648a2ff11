// Quickstart shows batpak's embedded event store in one short program:
// open a store, append an order event and the reactions it causes (with
// correlation and causation ids), ship it with compare-and-set (and see a
// second, stale ship refused), then read them back by query, by entity
// stream and by walking causation, and close.
//
//	go run ./examples/quickstart
package main
