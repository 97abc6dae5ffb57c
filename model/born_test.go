package model

import "testing"

func TestKilledByBorn(t *testing.T) {
	for _, c := range []struct {
		inst, tomb int64
		want       bool
	}{
		{0, 0, false}, {0, 5, false}, {5, 0, false}, {0, -5, false}, {-5, 0, false},
		{4, 5, true}, {5, 5, true}, {6, 5, false}, // known against known
		{-4, 5, true}, {-5, 5, true}, {-6, 5, false}, // unsure: born at or before its bound
		{4, -5, false}, {6, -5, false}, // an unsure expunge kills nothing by time
		{-5, -5, true}, {-4, -5, false}, {-6, -5, false}, // only its own line of copies
	} {
		if got := KilledByBorn(c.inst, c.tomb); got != c.want {
			t.Errorf("KilledByBorn(%d, %d) = %v, want %v", c.inst, c.tomb, got, c.want)
		}
	}
}

func TestBetterBorn(t *testing.T) {
	for _, c := range []struct {
		a, b int64
		want bool
	}{
		{5, 0, true}, {0, 5, false}, {-5, 0, true}, {0, -5, false}, {0, 0, false},
		{5, -3, true}, {-3, 5, false}, // known beats unsure
		{4, 5, true}, {5, 4, false}, {5, 5, false},
		{-4, -5, true}, {-5, -4, false}, {-5, -5, false},
	} {
		if got := BetterBorn(c.a, c.b); got != c.want {
			t.Errorf("BetterBorn(%d, %d) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
