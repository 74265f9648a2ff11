package tenantpolicy

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound an uploaded bundle. Zero fields take the defaults.
type Limits struct {
	// MaxBundleBytes bounds the bundle as uploaded (compressed): exactly
	// this many bytes are accepted, one more is refused. Default 4 MiB;
	// range 1 KiB..64 MiB.
	MaxBundleBytes int64
	// MaxFiles bounds the archive's entries (files and directories).
	// Default 256; range 1..10000.
	MaxFiles int
	// MaxFileBytes bounds one file of the archive (uncompressed). Default
	// 1 MiB; range 1 KiB..16 MiB.
	MaxFileBytes int64
	// MaxTotalBytes bounds the archive's files together (uncompressed),
	// so that a small archive cannot expand past it: exactly this many
	// bytes are accepted, one more is refused. The whole archive inflates
	// to at most this plus 16 KiB of tar headers (extended ones included)
	// per entry MaxFiles allows. Default 16 MiB; range 1 KiB..256 MiB.
	MaxTotalBytes int64
	// MaxRevisions bounds the revisions a tenant keeps (for rollback):
	// accepting a new one past it drops the oldest, never the one it
	// replaces, and removes its stored bundle. Default 32; range 2..1000.
	MaxRevisions int
}

// DefaultLimits are the limits zero fields take.
func DefaultLimits() Limits {
	return Limits{MaxBundleBytes: 4 << 20, MaxFiles: 256, MaxFileBytes: 1 << 20, MaxTotalBytes: 16 << 20, MaxRevisions: 32}
}

// WithDefaults fills zero fields with DefaultLimits and checks the
// ranges (an error names the field and its range).
func (l Limits) WithDefaults() (Limits, error) {
	d := DefaultLimits()
	if l.MaxBundleBytes == 0 {
		l.MaxBundleBytes = d.MaxBundleBytes
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileBytes == 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxTotalBytes == 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxRevisions == 0 {
		l.MaxRevisions = d.MaxRevisions
	}
	switch {
	case l.MaxBundleBytes < 1<<10 || l.MaxBundleBytes > 64<<20:
		return l, fmt.Errorf("policy bundle max bytes = %d: want 1KiB..64MiB", l.MaxBundleBytes)
	case l.MaxFiles < 1 || l.MaxFiles > 10000:
		return l, fmt.Errorf("policy bundle max files = %d: want 1..10000", l.MaxFiles)
	case l.MaxFileBytes < 1<<10 || l.MaxFileBytes > 16<<20:
		return l, fmt.Errorf("policy bundle max file bytes = %d: want 1KiB..16MiB", l.MaxFileBytes)
	case l.MaxTotalBytes < 1<<10 || l.MaxTotalBytes > 256<<20:
		return l, fmt.Errorf("policy bundle max total bytes = %d: want 1KiB..256MiB", l.MaxTotalBytes)
	case l.MaxRevisions < 2 || l.MaxRevisions > 1000:
		return l, fmt.Errorf("policy max revisions = %d: want 2..1000", l.MaxRevisions)
	}
	return l, nil
}

// BundleError refuses an archive that breaks a rule of Limits or of the
// bundle's form. Nothing of it is kept.
type BundleError struct {
	// Entry is the archive entry at fault ("" for the archive as a whole).
	Entry string
	// Detail says what is wrong with it.
	Detail string
	// Limit names the limit that was passed ("max_bundle_bytes",
	// "max_files", "max_file_bytes", "max_total_bytes"; "" for a rule of
	// form) and Value is
	// the limit's value.
	Limit string
	Value int64
}

func (e *BundleError) Error() string {
	if e.Entry == "" {
		return "policy bundle: " + e.Detail
	}
	entry := e.Entry
	if len(entry) > maxNameInError {
		entry = entry[:maxNameInError] + "…"
	}
	return fmt.Sprintf("policy bundle: entry %q: %s", entry, e.Detail)
}

// maxNameInError is the most of an entry's name an error repeats.
const maxNameInError = 256

// tarEntryOverhead is what one entry may add to an archive besides its
// file's bytes: its 512-byte header, padding to a block, and extended
// headers for a long name (PAX records, GNU long names).
const tarEntryOverhead = 16 << 10

// inflatedError is the refusal of an archive that inflates past its bound.
func inflatedError(lim Limits) *BundleError {
	return &BundleError{Detail: fmt.Sprintf("inflates to more than its files (max_total_bytes %d) and %d bytes of tar headers per entry (max_files %d)", lim.MaxTotalBytes, tarEntryOverhead, lim.MaxFiles), Limit: "max_total_bytes", Value: lim.MaxTotalBytes}
}

// errInflated ends a read of an archive past inflateBound's bound.
var errInflated = errors.New("archive inflates past its bound")

// inflateBound reads at most left bytes of r, then fails with errInflated.
type inflateBound struct {
	r    io.Reader
	left int64
}

func (b *inflateBound) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errInflated
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// Extract unpacks a gzip-compressed tar read from r into dir (which must
// exist and be empty), enforcing lim (see the package documentation). It
// returns a *BundleError for an archive it refuses; dir may then hold
// part of it (the caller removes dir). r is read whole but is not bounded
// here: bound it by MaxBundleBytes first.
func Extract(r io.Reader, dir string, lim Limits) error {
	lim, err := lim.WithDefaults()
	if err != nil {
		return err
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return &BundleError{Detail: "not a gzip-compressed tar archive: " + err.Error()}
	}
	defer zr.Close()
	// The archive inflates to its files and, per entry, a header, padding
	// and any extended header (a PAX record or GNU long name, which the
	// tar reader reads for itself, up to 1 MiB each, and no limit above
	// counts): bounded here, so a bundle of such headers cannot inflate a
	// thousandfold.
	inflated := &inflateBound{r: zr, left: lim.MaxTotalBytes + int64(lim.MaxFiles+1)*tarEntryOverhead}
	tr := tar.NewReader(inflated)
	seen := map[string]bool{}
	entries, modules := 0, 0
	var total int64 // uncompressed bytes of the files so far
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && (errors.Is(err, errInflated) || inflated.left <= 0) {
			return inflatedError(lim)
		}
		if err != nil {
			return &BundleError{Detail: "not a readable tar archive: " + err.Error()}
		}
		entries++
		if entries > lim.MaxFiles {
			return &BundleError{Entry: h.Name, Detail: fmt.Sprintf("more than %d entries (max_files)", lim.MaxFiles), Limit: "max_files", Value: int64(lim.MaxFiles)}
		}
		if h.Typeflag == tar.TypeDir && (h.Name == "./" || h.Name == ".") {
			continue // the bundle's own root, as `tar -C dir .` writes it
		}
		name, err := entryName(h.Name)
		if err != nil {
			return &BundleError{Entry: h.Name, Detail: err.Error()}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(name)), 0o700); err != nil {
				return &BundleError{Entry: h.Name, Detail: "cannot be created: " + osReason(err)}
			}
			continue
		case tar.TypeReg:
		case tar.TypeSymlink, tar.TypeLink:
			return &BundleError{Entry: h.Name, Detail: "is a link; a bundle holds regular files and directories only"}
		default:
			return &BundleError{Entry: h.Name, Detail: fmt.Sprintf("is not a regular file or a directory (tar type %q)", h.Typeflag)}
		}
		base := path.Base(name)
		if !strings.HasSuffix(base, ".rego") && !strings.HasSuffix(base, ".json") && base != ".manifest" {
			return &BundleError{Entry: h.Name, Detail: "is not a .rego, .json or .manifest file"}
		}
		if seen[name] {
			return &BundleError{Entry: h.Name, Detail: "appears twice in the archive"}
		}
		seen[name] = true
		if h.Size > lim.MaxFileBytes {
			return &BundleError{Entry: h.Name, Detail: fmt.Sprintf("is %d bytes, more than %d (max_file_bytes)", h.Size, lim.MaxFileBytes), Limit: "max_file_bytes", Value: lim.MaxFileBytes}
		}
		if h.Size > lim.MaxTotalBytes-total {
			return &BundleError{Entry: h.Name, Detail: fmt.Sprintf("brings the files to more than %d bytes uncompressed (max_total_bytes)", lim.MaxTotalBytes), Limit: "max_total_bytes", Value: lim.MaxTotalBytes}
		}
		total += h.Size
		if strings.HasSuffix(base, ".rego") {
			modules++
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return &BundleError{Entry: h.Name, Detail: "cannot be created: " + osReason(err)}
		}
		if err := writeEntry(dst, tr, lim.MaxFileBytes); err != nil {
			if errors.Is(err, errInflated) {
				return inflatedError(lim)
			}
			return &BundleError{Entry: h.Name, Detail: err.Error()}
		}
	}
	if modules == 0 {
		return &BundleError{Detail: "holds no .rego module"}
	}
	return nil
}

// entryName checks an entry's name and returns it cleaned: relative,
// inside the bundle, without NUL or backslash.
func entryName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\x00\\") {
		return "", errors.New("has an empty name or a NUL or backslash in its name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("has an absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`has a path escaping the bundle ("..")`)
		}
	}
	clean := path.Clean(name)
	if clean == "." || !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", errors.New("has a path outside the bundle")
	}
	return clean, nil
}

// writeEntry writes at most max bytes of r to a new file dst.
func writeEntry(dst string, r io.Reader, max int64) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cannot be created: %s", osReason(err))
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot be read: %s", osReason(err))
	}
	if n > max {
		return fmt.Errorf("is more than %d bytes (max_file_bytes)", max)
	}
	return nil
}

// osReason is err without the server path an *os.PathError names (the
// bundle's temporary directory): an error shown to the tenant names the
// entry, never the server's directories.
func osReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
