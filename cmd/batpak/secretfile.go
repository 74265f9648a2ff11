package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// maxSecretFileBytes bounds a file read for a credential (--token-file,
// server.operator_token_file): a token is a line, and a path pointing at
// something else (a log, a device) is refused before it is read whole.
const maxSecretFileBytes = 64 << 10

// readSecretFile reads a credential from path: its first line, without
// the line end and surrounding spaces. The file (or pipe: /dev/stdin)
// must hold at most maxSecretFileBytes, the first line not empty; a
// directory is refused. On Unix a
// file that users other than its owner may read is used, with a warning
// on warn naming the mode, as ssh warns about keys. Errors name the path
// and never the file's contents.
func readSecretFile(path string, warn io.Writer) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return "", fmt.Errorf("%s is a directory", path)
	}
	// A pipe or terminal (/dev/stdin) is read as far as the bound too.
	if fi.Mode().IsRegular() && fi.Size() > maxSecretFileBytes {
		return "", fmt.Errorf("%s holds %d bytes; a credential file holds one line, at most %d bytes", path, fi.Size(), maxSecretFileBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFileBytes {
		return "", fmt.Errorf("%s holds more than %d bytes; a credential file holds one line", path, maxSecretFileBytes)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("%s: the first line is empty; it should hold the credential", path)
	}
	warnIfOthersRead(path, "holds a credential", warn)
	return tok, nil
}

// warnIfOthersRead warns on w when the file at path, which holds a
// credential (what says how), may be read by users other than its owner
// (Unix permission bits; nothing is said on Windows, whose ACLs these
// bits do not describe).
func warnIfOthersRead(path, what string, w io.Writer) {
	if runtime.GOOS == "windows" || path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		fmt.Fprintf(w, "batpak: warning: %s %s and other users may read it (mode %04o); chmod 600 %s\n", path, what, perm, path)
	}
}
