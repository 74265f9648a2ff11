// Package printable makes untrusted text safe to print on one line: what a
// plugin logs or returns as an error must not be able to start a line of
// its own, move the cursor, colour the terminal or hide text.
package printable
