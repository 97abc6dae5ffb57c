package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// UidlistPage is the unit an append must stay within: a write that does
// not cross a page boundary reaches the disk whole or not at all (the file
// system writes the page and the new size together), so a crash never
// leaves half a record for Dovecot's next append to be glued to.
const UidlistPage = 4096

// ErrNoAppend says that a dovecot-uidlist cannot take an append (it does
// not end with a newline, the records would cross a page boundary, or
// their UIDs are not above the file's last one): rewrite it instead.
var ErrNoAppend = errors.New("uidlist: cannot append")

// UidlistAppend is an open dovecot-uidlist that new records can be
// appended to in place, the way Dovecot adds records between rewrites
// (maildir-uidlist.c appends under the dotlock; its readers read from the
// offset they had reached). The caller must hold the uidlist dotlock from
// OpenUidlistAppend to Close.
//
// Only the header line and the last record are parsed: Header carries
// the header fields (no records), LastUID the last record's UID (0 when
// there is none) and NextUID what a full parse would give (the header's
// NEXTUID raised to LastUID+1, as Dovecot reads an appended file).
type UidlistAppend struct {
	Path    string
	Header  *Uidlist
	LastUID uint32
	NextUID uint32
	Info    os.FileInfo // of the open file, as read
	Ino     uint64
	f       *os.File
	data    []byte
}

// OpenUidlistAppend opens dir/dovecot-uidlist for an append and reads it.
// It returns ErrNoAppend (and nothing open) when the file does not end
// with "\n" (a torn or unfinished last line: appending would glue a record
// to it) or its header is not version 3.
func OpenUidlistAppend(dir string) (*UidlistAppend, error) {
	path := filepath.Join(dir, UidlistName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	a := &UidlistAppend{Path: path, f: f}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	a.Info = fi
	a.Ino = inodeOf(fi)
	a.data = make([]byte, fi.Size())
	n, err := f.ReadAt(a.data, 0)
	if n != len(a.data) {
		return nil, fmt.Errorf("reading %s: short read (%d of %d bytes): %v", path, n, len(a.data), err)
	}
	d := a.data
	if len(d) == 0 || d[len(d)-1] != '\n' {
		return nil, ErrNoAppend
	}
	nl := bytes.IndexByte(d, '\n')
	hdr, err := ParseUidlist(d[:nl+1])
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	if hdr.Version != 3 {
		return nil, ErrNoAppend
	}
	a.Header, a.NextUID = hdr, hdr.NextUID
	if nl+1 < len(d) {
		start := bytes.LastIndexByte(d[:len(d)-1], '\n') + 1
		last := d[start:]
		i := 0
		for i < len(last) && last[i] >= '0' && last[i] <= '9' {
			i++
		}
		u, err := strconv.ParseUint(string(last[:i]), 10, 32)
		if err != nil || u == 0 || i == len(last) || last[i] != ' ' {
			return nil, fmt.Errorf("parsing %s: invalid last record %q", path, bytes.TrimSpace(last))
		}
		a.LastUID = uint32(u)
		if a.NextUID <= a.LastUID {
			a.NextUID = a.LastUID + 1
		}
	}
	ok = true
	return a, nil
}

// Lists reports whether a record of the file names base (as " :base\n",
// or " :base:..." in the full names older Dovecots wrote).
func (a *UidlistAppend) Lists(base string) bool {
	pat := " :" + base
	d := a.data
	for {
		i := bytes.Index(d, []byte(pat))
		if i < 0 {
			return false
		}
		if j := i + len(pat); j < len(d) && (d[j] == '\n' || d[j] == ':') {
			return true
		}
		d = d[i+1:]
	}
}

// Append writes recs (ascending UIDs, all above LastUID) at the end of the
// file with one write that must not cross a page boundary (ErrNoAppend
// otherwise, with nothing written), gives the file a later mtime than it
// had, to the nanosecond (as a rewrite would: nextUidlistMtime), and
// fsyncs it. On a failed write the file is cut back to its old size.
// It returns the file's FileInfo after the append.
func (a *UidlistAppend) Append(recs []UidRecord) (os.FileInfo, error) {
	if len(recs) == 0 {
		return a.Info, nil
	}
	prev := a.LastUID
	var b []byte
	for _, r := range recs {
		if r.UID <= prev || r.UID == ^uint32(0) {
			return nil, ErrNoAppend
		}
		prev = r.UID
		base := r.Base()
		if base == "" || bytes.ContainsAny([]byte(base), "/\x00\r\n ") {
			return nil, fmt.Errorf("appending to %s: UID %d: invalid file name %q", a.Path, r.UID, r.FileName)
		}
		b = strconv.AppendUint(b, uint64(r.UID), 10)
		for _, e := range r.Ext {
			if e.Key < 'A' || e.Key > 'Z' || !validExtValue(e.Value) {
				return nil, fmt.Errorf("appending to %s: UID %d: invalid field %c%q", a.Path, r.UID, e.Key, e.Value)
			}
			b = append(b, ' ', e.Key)
			b = append(b, e.Value...)
		}
		b = append(b, " :"...)
		b = append(b, base...)
		b = append(b, '\n')
	}
	size := a.Info.Size()
	if size%UidlistPage+int64(len(b)) > UidlistPage {
		return nil, ErrNoAppend
	}
	n, err := a.f.WriteAt(b, size)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(b))
	}
	if err != nil {
		_ = a.f.Truncate(size)
		return nil, fmt.Errorf("appending to %s: %w", a.Path, err)
	}
	mt := nextUidlistMtime(a.Info.ModTime(), time.Now())
	// The mtime before the sync, so that the sync covers it. By path: we
	// hold the dotlock, and the file is not replaced under it.
	if err := os.Chtimes(a.Path, time.Time{}, mt); err != nil {
		return nil, fmt.Errorf("appending to %s: %w", a.Path, err)
	}
	if err := a.f.Sync(); err != nil {
		return nil, fmt.Errorf("appending to %s: fsync: %w", a.Path, err)
	}
	fi, err := a.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("appending to %s: %w", a.Path, err)
	}
	a.Info, a.LastUID = fi, prev
	a.data = nil // no longer the file's content
	if a.NextUID <= prev {
		a.NextUID = prev + 1
	}
	return fi, nil
}

// Close closes the file.
func (a *UidlistAppend) Close() error { return a.f.Close() }
