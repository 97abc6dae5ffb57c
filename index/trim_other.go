//go:build !linux

package index

// trimMapped is a no-op where MADV_DONTNEED on a shared map is not known
// to keep the file's pages (see trim_linux.go).
func (s *Store) trimMapped() {}
