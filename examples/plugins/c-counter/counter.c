/*
 * c-counter: a batpak projection plugin in C (plugin ABI v1, see
 * plugins/abi/doc.go). It counts the events it is given into an 8-byte
 * little-endian state, like the Go counter in examples/plugins/counter, and
 * shows that the ABI needs nothing but a few exported functions: no libc,
 * no runtime, no glue.
 *
 * With the manifest granting the environment variable COUNTER_KIND (a kind
 * number, decimal or 0x-prefixed hex: category<<12 | type), it counts only
 * events of that kind.
 *
 * Memory: batpak_alloc is a bump allocator over the memory above the data
 * and stack (__heap_base), grown on demand; it is reset at the end of each
 * fold, when the host no longer needs the inputs. The result is a static
 * 8-byte buffer, valid until the next call.
 */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define WASI_IMPORT(name) \
	__attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))

enum { ABI_VERSION = 1, EVENT_FIXED = 84, PAGE = 65536 };

WASI_IMPORT("environ_sizes_get") int32_t wasi_environ_sizes_get(uint32_t *count, uint32_t *size);
WASI_IMPORT("environ_get") int32_t wasi_environ_get(uint8_t **environ, uint8_t *buf);

extern unsigned char __heap_base; /* provided by wasm-ld */

static uint32_t heap_top;       /* next free byte; 0 until first use */
static uint8_t out[8];          /* the result state */
static int32_t only_kind = -1;  /* COUNTER_KIND, or -1: every kind */
static const char *init_error;  /* a bad COUNTER_KIND */

static uint32_t heap_start(void) { return ((uint32_t)(uintptr_t)&__heap_base + 15u) & ~15u; }

EXPORT("batpak_abi_version") int32_t batpak_abi_version(void) { return ABI_VERSION; }

EXPORT("batpak_alloc") uint32_t batpak_alloc(uint32_t size) {
	if (heap_top == 0)
		heap_top = heap_start();
	uint32_t p = heap_top;
	uint64_t end = (uint64_t)p + size;
	uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
	if (end > have) {
		uint64_t pages = (end - have + PAGE - 1) / PAGE;
		if (end > 0xffffffffull || __builtin_wasm_memory_grow(0, (uint32_t)pages) == (uint32_t)-1)
			__builtin_trap(); /* out of memory: the host reports a memory fault */
	}
	heap_top = (uint32_t)((end + 15u) & ~(uint64_t)15u);
	return p;
}

static uint16_t u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t u32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t u64(const uint8_t *p) { return u32(p) | (uint64_t)u32(p + 4) << 32; }

static uint64_t pack(const void *ptr, uint32_t len, int is_err) {
	return (uint32_t)(uintptr_t)ptr | (uint64_t)(len & 0x7fffffffu) << 32 | (uint64_t)(is_err != 0) << 63;
}

static uint64_t fail(const char *msg) {
	uint32_t n = 0;
	while (msg[n])
		n++;
	heap_top = heap_start();
	return pack(msg, n, 1);
}

/* parse_kind reads a decimal or 0x-hex number below 65536, or returns -1. */
static int32_t parse_kind(const uint8_t *s, uint32_t n) {
	uint32_t v = 0, base = 10, i = 0;
	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		base = 16, i = 2;
	if (i == n)
		return -1;
	for (; i < n; i++) {
		uint32_t d;
		uint8_t c = s[i];
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v * base + d;
		if (v > 0xffff)
			return -1;
	}
	return (int32_t)v;
}

/* _initialize runs once per instance (the host calls it when exported):
 * read COUNTER_KIND from the environment the manifest grants. */
EXPORT("_initialize") void initialize(void) {
	static const uint8_t key[] = "COUNTER_KIND=";
	const uint32_t klen = sizeof key - 1;
	uint32_t count, size;
	if (wasi_environ_sizes_get(&count, &size) != 0 || count == 0)
		return;
	uint8_t **env = (uint8_t **)(uintptr_t)batpak_alloc(count * sizeof(uint8_t *));
	uint8_t *buf = (uint8_t *)(uintptr_t)batpak_alloc(size);
	if (wasi_environ_get(env, buf) == 0) {
		for (uint32_t i = 0; i < count; i++) {
			const uint8_t *e = env[i];
			uint32_t j = 0;
			while (j < klen && e[j] == key[j])
				j++;
			if (j < klen)
				continue;
			uint32_t n = 0;
			while (e[klen + n])
				n++;
			only_kind = parse_kind(e + klen, n);
			if (only_kind < 0)
				init_error = "COUNTER_KIND: want a kind number below 65536 (decimal or 0x hex)";
		}
	}
	heap_top = heap_start();
}

/* batpak_fold(state, batch) -> the state plus the number of events in the
 * batch (of COUNTER_KIND, when set). It checks the batch's layout as the Go
 * SDK does and reports a malformed batch as an error. */
EXPORT("batpak_fold")
uint64_t batpak_fold(const uint8_t *state, uint32_t state_len, const uint8_t *batch, uint32_t batch_len) {
	if (init_error)
		return fail(init_error);
	uint64_t n = state_len >= 8 ? u64(state) : 0;
	if (batch_len < 4)
		return fail("malformed plugin data: batch shorter than its count");
	uint32_t count = u32(batch), off = 4;
	for (uint32_t i = 0; i < count; i++) {
		if (batch_len - off < 4)
			return fail("malformed plugin data: event truncated");
		uint32_t size = u32(batch + off);
		off += 4;
		if (size < EVENT_FIXED || size > batch_len - off)
			return fail("malformed plugin data: event size out of bounds");
		const uint8_t *e = batch + off;
		if ((uint64_t)EVENT_FIXED + u16(e + 76) + u16(e + 78) + u32(e + 80) != size)
			return fail("malformed plugin data: event field lengths do not add up");
		if (only_kind < 0 || u16(e + 24) == (uint32_t)only_kind)
			n++;
		off += size;
	}
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(n >> (8 * i));
	heap_top = heap_start(); /* the inputs are no longer needed */
	return pack(out, sizeof out, 0);
}
