package maildir

// IndexLogName is the file of a mailbox's Dovecot transaction log, in the
// mailbox directory (unless mail_location keeps indexes elsewhere: INDEX=).
const IndexLogName = "dovecot.index.log"

// IndexLogLock is a held lock on a mailbox's dovecot.index.log (see
// LockIndexLog). The zero of *IndexLogLock (nil) holds nothing.
type IndexLogLock struct{ unlock func() }

// Unlock releases the lock; on nil it does nothing.
func (l *IndexLogLock) Unlock() {
	if l != nil && l.unlock != nil {
		l.unlock()
		l.unlock = nil
	}
}
