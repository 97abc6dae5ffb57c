//go:build linux

package index

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// trimMapped lets go of the index pages this process has touched through
// bbolt's memory map. The map is shared and read-only (bbolt writes with
// pwrite), so MADV_DONTNEED only drops the page-table entries: the pages
// stay in the page cache, unchanged, and fault back in when read again.
// Without it, reading a whole 50k-message index (a first sync) keeps every
// page of it in the process's resident set, as much as its heap.
//
// It runs inside a read transaction, which holds bbolt's mmap lock: the
// map cannot be moved (remapped when the file grows) under it. Its extent
// is read from /proc/self/maps, so that nothing outside it is touched.
func (s *Store) trimMapped() {
	_ = s.db.View(func(tx *bolt.Tx) error {
		info := tx.DB().Info()
		if info == nil || info.Data == 0 {
			return nil
		}
		if size := mappingSize(info.Data); size > 0 {
			_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, info.Data, size, syscall.MADV_DONTNEED)
		}
		return nil
	})
}

// mappingSize returns the length of the mapping that starts at addr (0 if
// there is none).
func mappingSize(addr uintptr) uintptr {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	want := strconv.FormatUint(uint64(addr), 16) + "-"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Bytes()
		if !bytes.HasPrefix(l, []byte(want)) {
			continue
		}
		rest := l[len(want):]
		if i := bytes.IndexByte(rest, ' '); i > 0 {
			end, err := strconv.ParseUint(string(rest[:i]), 16, 64)
			if err == nil && uintptr(end) > addr {
				return uintptr(end) - addr
			}
		}
		return 0
	}
	return 0
}
