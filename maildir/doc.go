// Package maildir reads and writes the on-disk formats of a Dovecot Maildir,
// so that twinbox can change a mail root while Dovecot (2.3 or 2.4) serves it.
// It uses the standard library only and holds no state of its own.
//
// # What it covers
//
//   - Locations and names: Location (root, Maildir++ or LAYOUT=fs, UTF8),
//     mailbox name <-> directory (MailboxDir, NameFromDir, ListMailboxes)
//     and modified UTF-7 (EncodeMUTF7, DecodeMUTF7).
//   - Message file names: base[,S=size][,W=vsize][:2,flags] (FileName).
//   - dovecot-uidlist (Uidlist), dovecot-keywords, subscriptions and
//     dovecot.mailbox.log.
//   - Dovecot's dotlock (Dotlock) and the one atomic-write helper that every
//     package of twinbox uses to write a whole file (WriteFileAtomic).
//
// # Contract
//
// Parsers are pure functions of bytes. They follow Dovecot's own readers
// (cited in each function's documentation): what Dovecot accepts and how it
// resolves oddities, twinbox accepts and resolves the same way, so both see
// the same UIDs, flags and keywords. Where Dovecot would give up on a file
// (and rebuild it, losing UIDs), the parser returns a *ParseError that
// wraps ErrCorrupt. Writers produce what Dovecot writes.
//
// Nothing derived from a name can leave the mail root: MailboxDir rejects
// empty levels, "." and "..", control characters and separators inside a
// level, and checks the result is inside Root; ParseFileName rejects "/"
// and leading dots. Invalid names give a *NameError or an error wrapping
// ErrInvalidFileName that names the offending input.
//
// Readers of index files take no lock (Dovecot's don't); note that Dovecot
// appends new records to dovecot-uidlist in place, so a reader may see a
// last line in the making, which ParseUidlist ignores as Dovecot does.
// Writers of dovecot-uidlist and dovecot-keywords must hold the uidlist
// dotlock (LockUidlist), and so must anyone renaming or unlinking in cur/;
// writers of subscriptions should hold LockSubscriptions.
// The dotlock is Dovecot's: "<file>.lock" created with O_EXCL, refreshed
// every 10 s while held, taken over when it and the file it protects have
// not changed for 120 s (30 s for subscriptions).
//
// # Durability order
//
// Every change twinbox makes to a Maildir follows these steps, in order;
// a crash between any two leaves a Maildir that Dovecot reads correctly and
// that the next sync completes:
//
//  1. A new message is written to tmp/ under a new unique base name
//     (NewBase), fsynced, given its INTERNALDATE as mtime, and only then
//     renamed (or linked) into new/ or cur/; then that directory is fsynced.
//  2. A flag change is a rename within cur/ that keeps the base name, made
//     while holding the uidlist dotlock; then cur/ is fsynced.
//  3. Index files (dovecot-uidlist, dovecot-keywords, subscriptions) are
//     replaced whole with WriteFileAtomic under their lock, after the
//     messages they describe are durable, with a later mtime than before
//     (Dovecot notices changes by mtime): in a later second for
//     dovecot-keywords and subscriptions (Dovecot compares whole seconds),
//     the current time to the nanosecond for dovecot-uidlist (Dovecot
//     compares nanoseconds, and its in-place appends set the real time: a
//     future-dated mtime could come back); temp file, write, fsync, rename,
//     fsync the directory.
//  4. Only then does twinbox record the change in its own index, and only
//     after that does it tell the peer.
//
// Removing a message (an expunge) is the reverse: unlink under the lock,
// fsync cur/, then update the uidlist, then the index.
package maildir
