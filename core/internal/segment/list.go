package segment

import (
	"cmp"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Listing segment files. A key is a segment id and a generation (see
// format.SegID, format.SegGen); each id must have one live generation.

// List returns the keys of the segment files in dir, by id then
// generation (see Order). Errors: the directory's, or Order's.
func List(fsys vfs.FS, dir string) ([]uint32, error) {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return Order(fsys, dir, Keys(ents))
}

// Keys returns the keys of the segment files among ents.
func Keys(ents []fs.DirEntry) []uint32 {
	var ids []uint32
	for _, e := range ents {
		if key, ok := ParseName(e.Name()); ok && !e.IsDir() {
			ids = append(ids, key)
		}
	}
	return ids
}

// Order sorts segment keys by id and generation and fails with a
// *CorruptError (Live set) when one id has two generations (a packing caught
// between its rename and its delete is resolved: its packed file holds
// the same frames).
func Order(fsys vfs.FS, dir string, ids []uint32) ([]uint32, error) {
	slices.SortFunc(ids, func(a, b uint32) int {
		return cmp.Or(cmp.Compare(format.SegID(a), format.SegID(b)), cmp.Compare(format.SegGen(a), format.SegGen(b)))
	})
	for i := 1; i < len(ids); i++ {
		if format.SegID(ids[i]) == format.SegID(ids[i-1]) && ids[i] == RepackedKey(ids[i-1]) && SamePlacesPacked(fsys, filepath.Join(dir, format.SegmentName(ids[i]))) {
			ids = append(ids[:i-1], ids[i:]...)
			i--
			continue
		}
		if format.SegID(ids[i]) == format.SegID(ids[i-1]) {
			return nil, &CorruptError{File: filepath.Join(dir, format.SegmentName(ids[i])), Live: true,
				Reason: fmt.Sprintf("two generations of segment %d (%s too)", format.SegID(ids[i]), format.SegmentName(ids[i-1]))}
		}
	}
	return ids, nil
}

// ParseName returns the key a segment file name stands for; ok is
// false for any other name. Only the store's own spelling is accepted
// (format.SegmentName(key) == name): listing, journals and snapshots agree on
// what a segment file is.
func ParseName(name string) (key uint32, ok bool) {
	if !strings.HasSuffix(name, format.SegmentSuffix) {
		return 0, false
	}
	base, gen, _ := strings.Cut(strings.TrimSuffix(name, format.SegmentSuffix), ".")
	n, err := strconv.ParseUint(base, 10, format.SegIDBits)
	if err != nil {
		return 0, false
	}
	key = uint32(n)
	if gen != "" {
		g, err := strconv.ParseUint(gen, 10, 8)
		if err != nil || g == 0 {
			return 0, false
		}
		key |= uint32(g) << format.SegIDBits
	}
	return key, format.SegmentName(key) == name
}
