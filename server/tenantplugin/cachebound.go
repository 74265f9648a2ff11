package tenantplugin

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultCacheMaxBytes is Options.CacheMaxBytes' default.
const DefaultCacheMaxBytes = 4 << 30

// Where plugins.Host keeps its markers of the modules that passed a check
// (which vouch for the compiled code beside them) under the cache.
var cacheMarkerDirs = []string{"batpak-valid", "batpak-bounded"}

// pruneCache keeps the compile cache within Options.CacheMaxBytes: past
// it, the markers of the modules that passed a check go first, then the
// compiled modules written longest ago, until the cache holds at most
// three quarters of the bound. A module loaded now keeps running (its
// code is in memory); one whose compiled form is gone is compiled again
// when next loaded: by the Compiler, or, while a plugin host still
// remembers in memory that it passed (up to 4,096 modules each), in the
// server's process — a module that compiled within the Compiler's limits
// before, so within them again. A tenant that uploads and deletes modules
// without end thus costs the disk at most the bound (checked after each
// load and upload; a load during a prune leaves the check to the next).
// Errors are logged; they never fail a load.
func (m *Manager) pruneCache() {
	dir, max := m.opts.CacheDir, m.opts.CacheMaxBytes
	if dir == "" || max < 0 {
		return
	}
	if !m.pruneMu.TryLock() {
		return // a prune is running; it sees this load's files or the next does
	}
	defer m.pruneMu.Unlock()
	// Compiled modules are files directly in the cache's subdirectories
	// (wazero's, one per version): while none of those changed, nothing
	// was added, and the cache is not walked again (a server loading
	// every tenant's plugins at start would walk it once per plugin).
	stamp, err := dirStamp(dir)
	if err == nil && stamp == m.pruneStamp {
		return
	}
	m.pruneStamp = stamp
	type entry struct {
		path string
		size int64
		mod  time.Time
	}
	var files []entry
	var total int64
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		total += info.Size()
		rel, _ := filepath.Rel(dir, p)
		marker := false
		for _, md := range cacheMarkerDirs {
			marker = marker || strings.HasPrefix(rel, md+string(filepath.Separator))
		}
		// A file being written (wazero's *.tmp) is left to its writer.
		if !marker && !(strings.HasSuffix(p, ".tmp") && time.Since(info.ModTime()) < time.Minute) {
			files = append(files, entry{p, info.Size(), info.ModTime()})
		}
		return nil
	})
	if err != nil {
		m.opts.Logger.Warn("reading the plugin compile cache", "dir", dir, "error", err)
		return
	}
	if total <= max {
		return
	}
	for _, md := range cacheMarkerDirs {
		if err := os.RemoveAll(filepath.Join(dir, md)); err != nil {
			m.opts.Logger.Warn("removing the plugin compile cache's markers", "dir", dir, "error", err)
			return
		}
	}
	slices.SortFunc(files, func(a, b entry) int { return a.mod.Compare(b.mod) })
	removed, freed := 0, int64(0)
	for _, f := range files {
		if total <= max/4*3 {
			break
		}
		if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
			m.opts.Logger.Warn("removing from the plugin compile cache", "file", f.path, "error", err)
			continue
		}
		total -= f.size
		removed++
		freed += f.size
	}
	m.opts.Logger.Info("the plugin compile cache passed its bound (server.plugin_cache_bytes): removed the oldest compiled modules",
		"files", removed, "bytes", freed, "left_bytes", total, "max_bytes", max)
}

// dirStamp names the modification times of dir's subdirectories.
func dirStamp(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return "", err
		}
		b.WriteString(e.Name())
		b.WriteString(info.ModTime().Format(time.RFC3339Nano))
	}
	return b.String(), nil
}
