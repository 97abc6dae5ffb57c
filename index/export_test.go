package index

// SetTestHookAfterRenumberRenames makes applyBox call f right after the
// renames of a renumbering, before the uidlist names the new files (a
// panic there stands for a kill). It returns the function that removes it.
func SetTestHookAfterRenumberRenames(f func()) func() {
	testHookAfterRenumberRenames = f
	return func() { testHookAfterRenumberRenames = nil }
}

// SetTestHookBeforeApplyBox makes applyBox call f with the replica's root
// before it locks a mailbox (a client acting between scan and apply).
func SetTestHookBeforeApplyBox(f func(root string)) func() {
	testHookBeforeApplyBox = f
	return func() { testHookBeforeApplyBox = nil }
}
