package maildir

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// counterState returns the root's counter file content and its marker
// names, sorted.
func counterState(t *testing.T, root string) (string, []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, uidValidityFile))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var markers []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), uidValidityFile+".") {
			markers = append(markers, e.Name())
		}
	}
	sort.Strings(markers)
	return string(b), markers
}

func wantCounter(t *testing.T, root string, v uint32) {
	t.Helper()
	file, markers := counterState(t, root)
	hex := strings.TrimPrefix(filepathBase(Location{Root: root}.markerPath(v)), uidValidityFile+".")
	if file != hex || len(markers) != 1 || markers[0] != uidValidityFile+"."+hex {
		t.Fatalf("counter: file %q, markers %v; want %q and one marker %s.%s", file, markers, hex, uidValidityFile, hex)
	}
	got, err := Location{Root: root}.UIDValidityCounter()
	if err != nil || got != v {
		t.Fatalf("UIDValidityCounter = %d, %v; want %d", got, err, v)
	}
}

func filepathBase(p string) string { return filepath.Base(p) }

func TestNextUIDValidityCountsLikeDovecot(t *testing.T) {
	root := t.TempDir()
	loc := Location{Root: root}
	if v, err := loc.UIDValidityCounter(); err != nil || v != 0 {
		t.Fatalf("empty root: counter %d, %v", v, err)
	}
	now := time.Unix(1_700_000_000, 0)
	v, err := loc.NextUIDValidity(now)
	if err != nil || v != 1_700_000_000 {
		t.Fatalf("first value %d, %v; want the time", v, err)
	}
	wantCounter(t, root, v)
	// The next ones count up from the counter, whatever the clock says.
	for i := uint32(1); i <= 3; i++ {
		got, err := loc.NextUIDValidity(now.Add(-time.Hour))
		if err != nil || got != v+i {
			t.Fatalf("value %d: %d, %v; want %d", i, got, err, v+i)
		}
	}
	wantCounter(t, root, v+3)

	// The file lags behind the marker (a crash between the rename and the
	// write, or a raise by another process): the values tried after the
	// file's miss, and the directory, find the marker.
	if err := os.WriteFile(loc.uidValidityPath(), []byte("00000001"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := loc.NextUIDValidity(now)
	if err != nil || got != v+4 {
		t.Fatalf("with a lagging file: %d, %v; want %d", got, err, v+4)
	}
	wantCounter(t, root, v+4)

	// No file at all: the directory tells.
	if err := os.Remove(loc.uidValidityPath()); err != nil {
		t.Fatal(err)
	}
	got, err = loc.NextUIDValidity(now)
	if err != nil || got != v+5 {
		t.Fatalf("without the file: %d, %v; want %d", got, err, v+5)
	}
	wantCounter(t, root, v+5)
}

func TestRaiseUIDValidity(t *testing.T) {
	root := t.TempDir()
	loc := Location{Root: root}
	// No counter yet: the raise starts it at the value.
	if err := loc.RaiseUIDValidity(500); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, root, 500)
	if v, err := loc.NextUIDValidity(time.Unix(100, 0)); err != nil || v != 501 {
		t.Fatalf("after a raise to 500: next %d, %v", v, err)
	}
	// Never lowered.
	if err := loc.RaiseUIDValidity(300); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, root, 501)
	if err := loc.RaiseUIDValidity(501); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, root, 501)
	// Raised past a counter that is ahead of its file.
	if err := os.WriteFile(loc.uidValidityPath(), []byte("00000010"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loc.RaiseUIDValidity(400); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, root, 501) // the marker was ahead: only the file catches up
	if err := loc.RaiseUIDValidity(0x1000); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, root, 0x1000)
	if v, err := loc.NextUIDValidity(time.Unix(100, 0)); err != nil || v != 0x1001 {
		t.Fatalf("after a raise to 0x1000: next %d, %v", v, err)
	}
}

func TestUIDValidityCounterIgnoresJunk(t *testing.T) {
	root := t.TempDir()
	loc := Location{Root: root}
	for _, n := range []string{uidValidityFile + ".zz", uidValidityFile + ".123456789", uidValidityFile + ".lock"} {
		if err := os.WriteFile(filepath.Join(root, n), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(loc.uidValidityPath(), []byte("not hex!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := loc.UIDValidityCounter(); err != nil || v != 0 {
		t.Fatalf("junk only: counter %d, %v", v, err)
	}
	if v, err := loc.NextUIDValidity(time.Unix(77, 0)); err != nil || v != 77 {
		t.Fatalf("junk only: next %d, %v; want the time", v, err)
	}
	if v, err := loc.UIDValidityCounter(); err != nil || v != 77 {
		t.Fatalf("after a start among junk: counter %d, %v", v, err)
	}
}

func TestUIDValidityCounterOfNoRoot(t *testing.T) {
	loc := Location{Root: filepath.Join(t.TempDir(), "not-yet")}
	if v, err := loc.UIDValidityCounter(); err != nil || v != 0 {
		t.Fatalf("a root not made yet: counter %d, %v", v, err)
	}
}
