package tenantpolicy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// entry is one tar entry of a test archive.
type entry struct {
	name string
	body string
	typ  byte // 0: regular file
	link string
}

// archive builds a gzip-compressed tar (stored, not compressed, so that
// its size follows its content).
func archive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: e.typ, Linkname: e.link}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const module = "package batpak.write\n\nallow := true\n"

// A hostile or malformed archive is refused with a BundleError naming the
// entry at fault, and nothing is written outside the directory.
func TestExtractRefusesHostileEntries(t *testing.T) {
	ok := entry{name: "policy.rego", body: module}
	cases := []struct {
		name    string
		entries []entry
		entry   string
		want    string
	}{
		{"parent escape", []entry{ok, {name: "../evil.rego", body: module}}, "../evil.rego", "escaping"},
		{"nested escape", []entry{ok, {name: "a/../../evil.rego", body: module}}, "a/../../evil.rego", "escaping"},
		{"absolute", []entry{ok, {name: "/tmp/evil.rego", body: module}}, "/tmp/evil.rego", "absolute"},
		{"backslash", []entry{ok, {name: `..\evil.rego`, body: module}}, `..\evil.rego`, "backslash"},
		{"symlink", []entry{ok, {name: "link.rego", typ: tar.TypeSymlink, link: "/etc/passwd"}}, "link.rego", "link"},
		{"hard link", []entry{ok, {name: "hard.rego", typ: tar.TypeLink, link: "policy.rego"}}, "hard.rego", "link"},
		{"fifo", []entry{ok, {name: "pipe.rego", typ: tar.TypeFifo}}, "pipe.rego", "not a regular file"},
		{"other file type", []entry{ok, {name: "run.sh", body: "rm -rf /"}}, "run.sh", ".rego, .json or .manifest"},
		{"yaml data", []entry{ok, {name: "data.yaml", body: "a: 1"}}, "data.yaml", ".rego, .json or .manifest"},
		{"twice", []entry{ok, {name: "./policy.rego", body: module}}, "./policy.rego", "twice"},
		{"no module", []entry{{name: "data.json", body: "{}"}}, "", "no .rego module"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "bundle")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			err := tenantpolicy.Extract(bytes.NewReader(archive(t, c.entries...)), dir, tenantpolicy.Limits{})
			var be *tenantpolicy.BundleError
			if !errors.As(err, &be) || be.Entry != c.entry || !strings.Contains(be.Detail, c.want) {
				t.Fatalf("Extract = %v, want a BundleError on entry %q saying %q", err, c.entry, c.want)
			}
			if c.entry != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", c.entry)) {
				t.Errorf("the error %q does not name the entry", err)
			}
			ents, _ := os.ReadDir(root)
			if len(ents) != 1 {
				t.Errorf("Extract wrote outside its directory: %v", ents)
			}
		})
	}
	err := tenantpolicy.Extract(strings.NewReader("not gzip at all"), t.TempDir(), tenantpolicy.Limits{})
	var be *tenantpolicy.BundleError
	if !errors.As(err, &be) || !strings.Contains(be.Detail, "gzip") {
		t.Fatalf("Extract of a non-gzip body = %v", err)
	}
}

// The entry count and file size limits: exactly the limit is accepted,
// one more is refused naming the limit.
func TestExtractLimitsAtTheBoundary(t *testing.T) {
	lim := tenantpolicy.Limits{MaxFiles: 3, MaxFileBytes: 1024}
	files := func(n int) []entry {
		var out []entry
		for i := range n {
			out = append(out, entry{name: fmt.Sprintf("p%d.rego", i), body: module})
		}
		return out
	}
	if err := tenantpolicy.Extract(bytes.NewReader(archive(t, files(3)...)), t.TempDir(), lim); err != nil {
		t.Fatalf("3 entries with max_files 3: %v", err)
	}
	err := tenantpolicy.Extract(bytes.NewReader(archive(t, files(4)...)), t.TempDir(), lim)
	var be *tenantpolicy.BundleError
	if !errors.As(err, &be) || be.Limit != "max_files" || be.Value != 3 || be.Entry != "p3.rego" {
		t.Fatalf("4 entries with max_files 3: %v", err)
	}
	pad := func(n int) string { return module + "#" + strings.Repeat("x", n-len(module)-2) + "\n" }
	if len(pad(1024)) != 1024 {
		t.Fatal("padding")
	}
	dir := t.TempDir()
	if err := tenantpolicy.Extract(bytes.NewReader(archive(t, entry{name: "p.rego", body: pad(1024)})), dir, lim); err != nil {
		t.Fatalf("a 1024-byte file with max_file_bytes 1024: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "p.rego")); string(b) != pad(1024) {
		t.Fatal("the extracted file differs from the archive's")
	}
	err = tenantpolicy.Extract(bytes.NewReader(archive(t, entry{name: "p.rego", body: pad(1025)})), t.TempDir(), lim)
	if !errors.As(err, &be) || be.Limit != "max_file_bytes" || be.Value != 1024 || be.Entry != "p.rego" {
		t.Fatalf("a 1025-byte file with max_file_bytes 1024: %v", err)
	}
	for _, bad := range []tenantpolicy.Limits{{MaxFiles: 10001}, {MaxFileBytes: 1023}, {MaxBundleBytes: 64<<20 + 1}, {MaxFiles: -1}} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("limits %+v accepted", bad)
		}
	}
	if _, err := (tenantpolicy.Limits{MaxFiles: 10000, MaxFileBytes: 16 << 20, MaxBundleBytes: 64 << 20}).WithDefaults(); err != nil {
		t.Errorf("the largest limits refused: %v", err)
	}
}

// A bundle of extended headers — GNU long names the tar reader reads for
// itself, up to 1 MiB each, which no entry or byte limit counts — once
// inflated a thousandfold (a 4 MiB bundle, 3.7 GiB read, 8.7 s of CPU per
// push). The archive's inflated size is bounded by max_total_bytes plus a
// header allowance per entry, and the refusal names the limit, not the
// 1 MiB name.
func TestExtractBoundsExtendedHeaders(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	name := strings.Repeat("a", 1<<20-512)
	for range 64 { // 64 MiB inflated, a few KiB compressed
		longName := tarBlock(t, tar.TypeGNULongName, "././@LongLink", len(name))
		zw.Write(longName)
		zw.Write([]byte(name))
	}
	var tail bytes.Buffer
	tw := tar.NewWriter(&tail)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "p.rego", Size: int64(len(module)), Mode: 0o600})
	tw.Write([]byte(module))
	tw.Close()
	zw.Write(tail.Bytes())
	zw.Close()
	lim := tenantpolicy.Limits{MaxFiles: 16, MaxTotalBytes: 1 << 20}
	err := tenantpolicy.Extract(bytes.NewReader(buf.Bytes()), t.TempDir(), lim)
	var be *tenantpolicy.BundleError
	if !errors.As(err, &be) || be.Limit != "max_total_bytes" || !strings.Contains(be.Detail, "inflates to more than") || len(err.Error()) > 1024 {
		t.Fatalf("a %d-byte bundle of 64 long names of 1 MiB: %.300v", buf.Len(), err)
	}
	// A bundle with ordinary long names still passes.
	long := strings.Repeat("d/", 200) + "policy.rego"
	if err := tenantpolicy.Extract(bytes.NewReader(archive(t, entry{name: long, body: module})), t.TempDir(), lim); err != nil {
		t.Fatalf("a module under a 411-byte path: %v", err)
	}
}

// tarBlock is a 512-byte tar header of type typ for a body of size bytes.
func tarBlock(t *testing.T, typ byte, name string, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(size), Format: tar.FormatGNU, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	raw := append([]byte(nil), b.Bytes()[:512]...)
	raw[156] = typ
	copy(raw[148:156], "        ")
	sum := 0
	for _, c := range raw {
		sum += int(c)
	}
	copy(raw[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return raw
}

// An archive made with `tar czf b.tgz -C dir .` starts with the bundle's
// own root ("./") and names its files "./…": it extracts as the same files
// without the prefix; a file named "." or a root that is not a directory
// is still refused.
func TestExtractTakesTheRootEntry(t *testing.T) {
	dir := t.TempDir()
	err := tenantpolicy.Extract(bytes.NewReader(archive(t, entry{name: "./", typ: tar.TypeDir}, entry{name: "./policy.rego", body: module},
		entry{name: "./data/", typ: tar.TypeDir}, entry{name: "./data/data.json", body: "{}"})), dir, tenantpolicy.Limits{})
	if err != nil {
		t.Fatalf("an archive of `tar -C dir .`: %v", err)
	}
	for _, f := range []string{"policy.rego", "data/data.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not extracted: %v", f, err)
		}
	}
	err = tenantpolicy.Extract(bytes.NewReader(archive(t, entry{name: "policy.rego", body: module}, entry{name: ".", body: module})), t.TempDir(), tenantpolicy.Limits{})
	var be *tenantpolicy.BundleError
	if !errors.As(err, &be) || be.Entry != "." {
		t.Fatalf("a regular file named .: %v, want a BundleError naming it", err)
	}
}
