package model

// Born stamps (Message.Born, Tombstone.Born) come in three kinds:
//
//   - > 0: known. The instance first appeared in its mailbox then.
//   - < 0: unsure. The instance appeared at or before -Born, when exactly
//     is not known: an index rebuilt from the disk found it then (it was
//     listed before), and stamped it so. The value is minted once per
//     instance by that scan and travels with every copy of the instance
//     (adds, renumberings) and with the tombstone that retires one, so it
//     also names the instance's line of copies.
//   - 0: unknown (records of the index format without Born).
//
// KilledByBorn and BetterBorn hold the rules.

// KilledByBorn reports whether an expunge tombstone whose Born is tomb
// kills an instance of the same message GUID whose Born is inst by the
// Born rule (docs/design.md §6.7): an expunge kills every instance born at
// or before the one it retired. A known tomb kills a known instance born
// at or before it, and an unsure one whose bound is at or before it (born
// at or before that bound). An unsure tomb says only that the retired
// instance was born at or before its bound, which kills nothing by time:
// it kills only copies of that very instance (the same unsure stamp).
// Unknown stamps kill nothing.
func KilledByBorn(inst, tomb int64) bool {
	switch {
	case inst == 0 || tomb == 0:
		return false
	case tomb > 0:
		return absBorn(inst) <= tomb
	default:
		return inst == tomb
	}
}

// BetterBorn reports whether Born stamp a says more about an instance than
// b: known beats unsure beats unknown; of two known stamps, or two unsure
// ones, the earlier (a stamp is never earlier than the instance's birth).
func BetterBorn(a, b int64) bool {
	ra, rb := bornRank(a), bornRank(b)
	if ra != rb {
		return ra > rb
	}
	return ra != 0 && absBorn(a) < absBorn(b)
}

// BornTime is the time a Born stamp names (its bound when unsure).
func BornTime(b int64) int64 { return absBorn(b) }

func bornRank(b int64) int {
	switch {
	case b > 0:
		return 2
	case b < 0:
		return 1
	}
	return 0
}

func absBorn(b int64) int64 {
	if b < 0 {
		return -b
	}
	return b
}
