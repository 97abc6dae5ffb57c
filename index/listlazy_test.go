package index

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

// A lazy listing, once the caller has parsed what it keeps, is the eager
// one: the same files under the same bases, the same names refused.
func TestListSubsLazyMatchesEager(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{
		"cur/1.M1P1.h,S=5:2,S",    // plain
		"cur/2.M2P2.h:2,S",        // two names for one base in cur/
		"cur/2.M2P2.h:2,FS",       //
		"cur/3.M3P3.h:2,S",        // in cur/ and new/: cur/ wins
		"new/3.M3P3.h",            //
		"cur/4.M4P4.h:2,S:x",      // not a Maildir name (two ":"), a good one in new/
		"new/4.M4P4.h",            //
		"cur/5.M5P5.h:2,S:y",      // not a Maildir name, alone
		"cur/.6.M6P6.h:2,S",       // starts with "."
		"cur/7.M7P7.h:2,a,b",      // a second flag set
		"cur/7.M7P7.h:2,S",        // and a good one under that base
		"new/8.M8P8.h,S=3",        // new/ only
		"cur/9.M9P9.h:2,\x01",     // control character
		"cur/10.M10P10.h:2,RS",    //
		"cur/10.M10P10.h:2,S:z:w", // bad, after a good one of its base
	} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	type entry struct {
		Name  string
		InNew bool
		Base  string
	}
	flat := func(files map[string]*diskFile, bad []string) (map[string]entry, []string) {
		out := map[string]entry{}
		for b, f := range files {
			if !f.parse() {
				bad = append(bad, subdir(f.inNew)+"/"+f.name)
				continue
			}
			out[b] = entry{f.name, f.inNew, f.fn.Base}
		}
		sort.Strings(bad)
		return out, bad
	}
	ef, eb, err := listSubs(dir, true, true, false)
	if err != nil {
		t.Fatal(err)
	}
	lf, lb, err := listSubs(dir, true, true, true)
	if err != nil {
		t.Fatal(err)
	}
	e, ebad := flat(ef, eb)
	l, lbad := flat(lf, lb)
	if !reflect.DeepEqual(e, l) {
		t.Fatalf("files:\neager %v\nlazy  %v", e, l)
	}
	if !reflect.DeepEqual(ebad, lbad) {
		t.Fatalf("refused names:\neager %q\nlazy  %q", ebad, lbad)
	}
	for b, x := range e {
		if b != x.Base {
			t.Fatalf("file %q listed under base %q", x.Name, b)
		}
	}
	if len(e) != 7 || len(ebad) != 6 {
		t.Fatalf("eager listing: %d files, %d refused: %v %q", len(e), len(ebad), e, ebad)
	}
}
