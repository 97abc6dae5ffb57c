package index

// SetTestHookBeforeUidlistWrite makes applyBox call f after its journaled
// renames and fresh-name links, before the uidlist names the new files (a
// panic there stands for a kill). It returns the function that removes it.
func SetTestHookBeforeUidlistWrite(f func()) func() {
	testHookBeforeUidlistWrite = f
	return func() { testHookBeforeUidlistWrite = nil }
}

// SetTestHookBeforeApplyBox makes applyBox call f with the replica's root
// before it locks a mailbox (a client acting between scan and apply).
func SetTestHookBeforeApplyBox(f func(root string)) func() {
	testHookBeforeApplyBox = f
	return func() { testHookBeforeApplyBox = nil }
}

// SetTestHookBeforeRename makes a mailbox rename call f with its target
// directory just before it renames (a client creating that folder then).
func SetTestHookBeforeRename(f func(dst string)) func() {
	testHookBeforeRename = f
	return func() { testHookBeforeRename = nil }
}

// SetTestHookBeforeDeleteLock makes a mailbox delete call f with the
// directory it found, just before it takes that directory's uidlist lock
// (clients deleting and renaming folders then).
func SetTestHookBeforeDeleteLock(f func(dir string)) func() {
	testHookBeforeDeleteLock = f
	return func() { testHookBeforeDeleteLock = nil }
}

// SetTestHookBetweenListings makes every listing of a mailbox's messages
// call f with the mailbox directory after it read cur/ and before it reads
// new/ (Dovecot moving a file from new/ to cur/ then).
func SetTestHookBetweenListings(f func(dir string)) func() {
	testHookBetweenListings = f
	return func() { testHookBetweenListings = nil }
}

// SetTestHookAfterRename makes a mailbox move call f with its new directory
// right after the move, before it releases the lock that moved with it (a
// client deleting the folder then).
func SetTestHookAfterRename(f func(dst string)) func() {
	testHookAfterRename = f
	return func() { testHookAfterRename = nil }
}

// SetTestHookBeforeBoxCommit makes applyBox call f with the mailbox's
// directory after its files and control files are written, before the
// index records them (a panic there stands for a kill).
func SetTestHookBeforeBoxCommit(f func(dir string)) func() {
	testHookBeforeBoxCommit = f
	return func() { testHookBeforeBoxCommit = nil }
}

// SetTestHookAfterListing makes a full scan of a mailbox call f with the
// mailbox directory after it listed the messages, before it reads each new
// file's size (Dovecot moving a file from new/ to cur/ then).
func SetTestHookAfterListing(f func(dir string)) func() {
	testHookAfterListing = f
	return func() { testHookAfterListing = nil }
}
