// Package keylock holds a mutex per key (a tenant, a tenant's cursor),
// made when a key is first locked and dropped once nothing holds or
// waits for it, so that keys coming and going leave nothing behind and
// no key's holder makes another key's wait.
package keylock
