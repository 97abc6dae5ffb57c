package maildir

import (
	"fmt"
	"path/filepath"
)

// NudgeDovecot moves the modification time of dir's cur/ to now, so that
// Dovecot reads the mailbox's dovecot-uidlist again at its next look.
//
// Dovecot decides whether a mailbox changed from the mtimes of its new/ and
// cur/ alone, compared with the ones its index recorded (seconds and
// nanoseconds: maildir-sync.c, maildir_sync_quick_check); only a change
// there, or a look within a second of such a change (its delayed refresh),
// makes it take the uidlist lock and read dovecot-uidlist. A uidlist
// rewritten under a new UIDVALIDITY (or with files at other UIDs) and no
// rename in cur/ or new/ would stay unseen, and SELECT would answer from the
// index: the old UIDVALIDITY, and messages at UIDs the uidlist no longer
// gives them (integration/imap TestDovecotAloneSettledIndexIgnoresUidlist).
// Call it under the uidlist lock, after the rewrite. cur/'s mtime means
// nothing else to Dovecot or to a Maildir reader.
func NudgeDovecot(dir string) error {
	cur := filepath.Join(dir, "cur")
	if err := touchNow(cur); err != nil {
		return fmt.Errorf("moving the mtime of %s: %w", cur, err)
	}
	return nil
}
