package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Dovecot's per-root UIDVALIDITY counter (lib-storage's mailbox-uidvalidity):
// every mailbox Dovecot makes takes the next value, so that on one host no
// two mailboxes, and no mailbox made again under an old name, share a
// UIDVALIDITY (RFC 3501 2.3.1.1). Two files in the root:
//
//   - "dovecot-uidvalidity" holds the last value handed out, 8 lower-case
//     hex digits, rewritten in place;
//   - "dovecot-uidvalidity.<8 hex>", an empty file whose name is the last
//     value: the truth. A process takes the next value by renaming it from
//     the value it read to that value plus one; a rename that fails with
//     ENOENT means another process took one meanwhile (Dovecot then tries
//     the next values, and after ten misses reads the directory for the
//     highest marker).
//
// With no marker at all the counter starts at the current time.
//
// A mailbox twinbox makes with the peer's UIDVALIDITY is made outside that
// counter: RaiseUIDValidity moves the counter past it, so that this host's
// Dovecot never hands the same value to another mailbox later.
const uidValidityFile = "dovecot-uidvalidity"

// uidValidityRetries is how many values a taker tries after the one it read
// before it reads the directory (Dovecot's RETRY_COUNT).
const uidValidityRetries = 10

func (l Location) uidValidityPath() string { return filepath.Join(l.Root, uidValidityFile) }

// readUIDValidityFile returns the value in the root's dovecot-uidvalidity,
// ok false when the file is missing or does not hold a value.
func (l Location) readUIDValidityFile() (uint32, bool, error) {
	b, err := os.ReadFile(l.uidValidityPath())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, ok := parseUIDValidityHex(strings.TrimSpace(string(b)))
	return v, ok, nil
}

// parseUIDValidityHex parses up to 8 hex digits (Dovecot writes exactly 8).
func parseUIDValidityHex(s string) (uint32, bool) {
	if s == "" || len(s) > 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

// uidValidityMarkers returns the highest marker value in the root (0 when
// there is none, or no root yet) and how many markers there are.
func (l Location) uidValidityMarkers() (uint32, int, error) {
	ents, err := os.ReadDir(l.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	var hi uint32
	n := 0
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), uidValidityFile+".")
		if !ok {
			continue
		}
		if v, ok := parseUIDValidityHex(rest); ok {
			n++
			hi = max(hi, v)
		}
	}
	return hi, n, nil
}

// UIDValidityCounter returns the last UIDVALIDITY the root's counter handed
// out, 0 when the root has no counter yet. It reads the counter file, and
// the directory only when that file is missing or broken.
func (l Location) UIDValidityCounter() (uint32, error) {
	v, ok, err := l.readUIDValidityFile()
	if err != nil {
		return 0, fmt.Errorf("reading the UIDVALIDITY counter: %w", err)
	}
	if ok {
		return v, nil
	}
	hi, _, err := l.uidValidityMarkers()
	if err != nil {
		return 0, fmt.Errorf("reading the UIDVALIDITY counter: %w", err)
	}
	return hi, nil
}

func (l Location) markerPath(v uint32) string {
	return fmt.Sprintf("%s.%08x", l.uidValidityPath(), v)
}

// writeUIDValidityFile writes v into the counter file in place, as Dovecot
// does (it opens the file by path and overwrites its 8 digits), and makes it
// durable. A new file takes the root's permission bits without the execute
// ones (Dovecot's file mode follows the root directory's too).
func (l Location) writeUIDValidityFile(v uint32) error {
	p := l.uidValidityPath()
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(l.Root); err == nil {
		mode = fi.Mode().Perm()&0o666 | 0o600
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(fmt.Appendf(nil, "%08x", v), 0); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return chownLike(p, "", l.Root)
}

// moveMarker renames the marker of value from to value to; ok false when
// the marker of from is not there (another process moved it).
func (l Location) moveMarker(from, to uint32) (bool, error) {
	err := os.Rename(l.markerPath(from), l.markerPath(to))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// makeMarker creates the marker of value v (an empty file, mode 0444, as
// Dovecot makes it when a root has none).
func (l Location) makeMarker(v uint32) error {
	p := l.markerPath(v)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return chownLike(p, "", l.Root)
}

// NextUIDValidity takes the next value from the root's counter, as Dovecot
// does for a mailbox it makes: a new mailbox's UIDVALIDITY. now is the
// counter's start when the root has none. On an error the value returned is
// still usable (the current time or above the counter's last value, as
// Dovecot falls back), but the counter may not have moved.
func (l Location) NextUIDValidity(now time.Time) (uint32, error) {
	fallback := max(uint32(now.Unix()), 1)
	v, ok, err := l.readUIDValidityFile()
	if err == nil && ok {
		for range uidValidityRetries {
			if v == ^uint32(0) {
				break
			}
			moved, err := l.moveMarker(v, v+1)
			if err != nil {
				return max(fallback, v+1), fmt.Errorf("taking a UIDVALIDITY: %w", err)
			}
			v++
			if moved {
				return v, l.syncCounter(v)
			}
		}
	}
	// No (usable) counter file, or another process kept moving the marker:
	// the directory tells.
	hi, _, err := l.uidValidityMarkers()
	if err != nil {
		return fallback, fmt.Errorf("taking a UIDVALIDITY: %w", err)
	}
	if hi == 0 {
		if err := l.makeMarker(fallback); err != nil {
			return fallback, fmt.Errorf("taking a UIDVALIDITY: %w", err)
		}
		return fallback, l.syncCounter(fallback)
	}
	if hi == ^uint32(0) {
		return fallback, fmt.Errorf("taking a UIDVALIDITY: the counter is at its largest value")
	}
	moved, err := l.moveMarker(hi, hi+1)
	if err == nil && !moved {
		err = fmt.Errorf("marker %s moved by another process", l.markerPath(hi))
	}
	if err != nil {
		return max(fallback, hi+1), fmt.Errorf("taking a UIDVALIDITY: %w", err)
	}
	return hi + 1, l.syncCounter(hi + 1)
}

// RaiseUIDValidity makes the root's counter at least v, so that the values
// Dovecot hands out next are above v: to be called before twinbox makes a
// mailbox with UIDVALIDITY v that did not come from this root's counter.
// The marker moves first, then the file (a Dovecot that read the old value
// in between finds its marker gone and reads the directory, as it does when
// two of its processes race). A counter already at or above v is left alone.
func (l Location) RaiseUIDValidity(v uint32) error {
	if v == 0 {
		return nil
	}
	cur, ok, err := l.readUIDValidityFile()
	if err != nil {
		return fmt.Errorf("raising the UIDVALIDITY counter to %d: %w", v, err)
	}
	if ok && cur >= v {
		return nil
	}
	for range uidValidityRetries {
		hi, _, err := l.uidValidityMarkers()
		if err != nil {
			return fmt.Errorf("raising the UIDVALIDITY counter to %d: %w", v, err)
		}
		if hi >= v {
			// The marker is there already (the file lags: a crash between
			// Dovecot's two steps, or ours): bring the file up to it.
			if !ok || cur < hi {
				return l.syncCounter(hi)
			}
			return nil
		}
		if hi == 0 {
			err = l.makeMarker(v)
			if errors.Is(err, fs.ErrExist) {
				continue // made meanwhile: look again
			}
		} else {
			var moved bool
			if moved, err = l.moveMarker(hi, v); err == nil && !moved {
				continue // taken meanwhile: look again
			}
		}
		if err != nil {
			return fmt.Errorf("raising the UIDVALIDITY counter to %d: %w", v, err)
		}
		return l.syncCounter(v)
	}
	return fmt.Errorf("raising the UIDVALIDITY counter to %d: its marker kept moving", v)
}

// syncCounter writes v into the counter file and makes the marker's rename
// durable.
func (l Location) syncCounter(v uint32) error {
	if err := l.writeUIDValidityFile(v); err != nil {
		return fmt.Errorf("writing the UIDVALIDITY counter: %w", err)
	}
	if err := SyncDir(l.Root); err != nil {
		return fmt.Errorf("writing the UIDVALIDITY counter: %w", err)
	}
	return nil
}
