package index

import (
	"bytes"
	"io"
	"os"
	"path/filepath"

	"github.com/twinbox-mail/twinbox/maildir"
)

// readUidlistHeader reads only the header line of a mailbox's
// dovecot-uidlist (its GUID, UIDVALIDITY and NEXTUID, no records), for
// callers that only need to know which mailbox a directory holds. A header
// that does not fit in the first 4 KiB is read the long way.
func readUidlistHeader(dir string) (*maildir.Uidlist, error) {
	f, err := os.Open(filepath.Join(dir, maildir.UidlistName))
	if err != nil {
		return nil, err
	}
	var buf [4096]byte
	n, err := io.ReadFull(f, buf[:])
	f.Close()
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
		return maildir.ParseUidlist(buf[:i+1])
	}
	ul, _, err := maildir.ReadUidlist(dir)
	return ul, err
}
