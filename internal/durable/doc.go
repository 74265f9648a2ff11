// Package durable writes whole files that survive a crash or power loss,
// and reads them back within a bound: the server's content-addressed
// uploads (policy bundles, plugin modules, a cluster's blobs).
package durable
