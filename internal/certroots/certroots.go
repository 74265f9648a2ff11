package certroots

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileBytes bounds a CA file: far more than any bundle of CA
// certificates (the system's own bundle is a few hundred KiB).
const MaxFileBytes = 4 << 20

// Load returns the system's roots with the CA certificates of the PEM file
// at path added (only the file's, where the system's cannot be loaded). It
// fails, naming path, when the file cannot be read, is not a regular
// file, is larger than MaxFileBytes, or holds no certificate that parses
// (a block that does not parse among ones that do is skipped).
func Load(path string) (*x509.CertPool, error) {
	// Checked before opening: opening a FIFO would wait for a writer.
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("CA file %s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", path, err)
	}
	if len(pem) > MaxFileBytes {
		return nil, fmt.Errorf("CA file %s: larger than %d bytes", path, MaxFileBytes)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: %w", path, ErrNoCertificate)
	}
	return pool, nil
}

// ErrNoCertificate is Load's error for a file with no PEM certificate in it.
var ErrNoCertificate = errors.New("holds no PEM certificate")
