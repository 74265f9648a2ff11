package core

import (
	"fmt"
	"strings"

	"github.com/batpak-go/batpak/core/internal/segment"
)

// Compression says how sealed segments are stored.
type Compression uint8

const (
	// CompressionNone keeps sealed segments as written: reads map them.
	CompressionNone Compression = iota
	// CompressionZstd stores sealed segments as zstd blocks: the best ratio
	// (several times on JSON payloads), a block decompressed per cold read.
	CompressionZstd
	// CompressionS2 stores sealed segments as S2 blocks: a lower ratio than
	// zstd, several times cheaper to compress and to read.
	CompressionS2
)

func (c Compression) String() string {
	switch c {
	case CompressionZstd:
		return "zstd"
	case CompressionS2:
		return "s2"
	case CompressionNone:
		return "none"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// ParseCompression parses "none", "zstd" or "s2" (any case).
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "":
		return CompressionNone, nil
	case "zstd":
		return CompressionZstd, nil
	case "s2":
		return CompressionS2, nil
	}
	return 0, fmt.Errorf("batpak: unknown compression %q (want none, zstd or s2)", s)
}

// A packed segment's header stores the Compression value as its codec.
var (
	_ [0]struct{} = [segment.Codec(CompressionZstd) - segment.CodecZstd]struct{}{}
	_ [0]struct{} = [segment.Codec(CompressionS2) - segment.CodecS2]struct{}{}
)
