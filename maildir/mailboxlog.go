package maildir

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"
)

// MailboxLogName is the mailbox change log in the root; Dovecot renames it
// to MailboxLogName+".2" once it reaches MailboxLogRotateSize bytes.
const (
	MailboxLogName       = "dovecot.mailbox.log"
	MailboxLogRotateSize = 4096
)

// LogType is the type of a dovecot.mailbox.log record.
type LogType uint8

const (
	LogDeleteMailbox LogType = 1 // GUID: the mailbox GUID
	LogDeleteDir     LogType = 2 // GUID: MailboxNameHash(name); also follows a delete-mailbox
	LogRename        LogType = 3 // GUID: MailboxNameHash(new name)
	LogSubscribe     LogType = 4 // GUID: MailboxNameHash(name)
	LogUnsubscribe   LogType = 5 // GUID: MailboxNameHash(name)
	LogCreateDir     LogType = 6 // in Dovecot's enum; its log reader rejects it (see AppendMailboxLog)
)

func (t LogType) String() string {
	switch t {
	case LogDeleteMailbox:
		return "delete-mailbox"
	case LogDeleteDir:
		return "delete-dir"
	case LogRename:
		return "rename"
	case LogSubscribe:
		return "subscribe"
	case LogUnsubscribe:
		return "unsubscribe"
	case LogCreateDir:
		return "create-dir"
	default:
		return fmt.Sprintf("LogType(%d)", uint8(t))
	}
}

// LogRecord is one 24-byte record: type (1 byte), 3 bytes of padding, a
// 16-byte GUID, a 4-byte big-endian Unix time.
type LogRecord struct {
	Type LogType
	GUID [16]byte
	Time time.Time // whole seconds, UTC
}

const logRecordSize = 24

// ParseMailboxLog parses the records of a dovecot.mailbox.log file. A
// trailing partial record (a writer in mid-append) is ignored; records of
// unknown type are kept (Dovecot's own reader stops at them and deletes the
// file). It never fails; the error is for symmetry with the other parsers.
func ParseMailboxLog(data []byte) ([]LogRecord, error) {
	n := len(data) / logRecordSize
	if n == 0 {
		return nil, nil
	}
	recs := make([]LogRecord, n)
	for i := range recs {
		b := data[i*logRecordSize : (i+1)*logRecordSize]
		recs[i].Type = LogType(b[0])
		copy(recs[i].GUID[:], b[4:20])
		recs[i].Time = time.Unix(int64(binary.BigEndian.Uint32(b[20:24])), 0).UTC()
	}
	return recs, nil
}

// MarshalMailboxLog encodes records (zero padding). Times outside the
// 32-bit range are clamped; AppendMailboxLog refuses them instead.
func MarshalMailboxLog(recs []LogRecord) []byte {
	out := make([]byte, 0, len(recs)*logRecordSize)
	for _, r := range recs {
		var b [logRecordSize]byte
		b[0] = byte(r.Type)
		copy(b[4:20], r.GUID[:])
		t := r.Time.Unix()
		t = max(0, min(t, math.MaxUint32))
		binary.BigEndian.PutUint32(b[20:24], uint32(t))
		out = append(out, b[:]...)
	}
	return out
}

// ReadMailboxLog reads root/dovecot.mailbox.log.2 and then
// root/dovecot.mailbox.log, as Dovecot iterates them. Missing files are
// fine.
func ReadMailboxLog(root string) ([]LogRecord, error) {
	var all []LogRecord
	for _, name := range []string{MailboxLogName + ".2", MailboxLogName} {
		path := filepath.Join(root, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		recs, _ := ParseMailboxLog(data)
		all = append(all, recs...)
	}
	return all, nil
}

// AppendMailboxLog appends records to root/dovecot.mailbox.log in one
// O_APPEND write, fsyncs it, and rotates the file to ".2" once it has
// reached 4 KiB, as Dovecot does. Only types 1..5 are accepted: Dovecot's
// reader treats any other type (even its own LogCreateDir) as corruption and
// deletes the log, which would lose the delete records twinbox relies on.
// A short write is truncated away so that later records stay aligned.
func AppendMailboxLog(root string, recs []LogRecord) error {
	path := filepath.Join(root, MailboxLogName)
	for _, r := range recs {
		if r.Type < LogDeleteMailbox || r.Type > LogUnsubscribe {
			return fmt.Errorf("appending to %s: record type %d would make Dovecot delete the log", path, r.Type)
		}
		if t := r.Time.Unix(); t < 0 || t > math.MaxUint32 {
			return fmt.Errorf("appending to %s: time %v does not fit in 32 bits", path, r.Time)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	_, statErr := os.Lstat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	defer f.Close()
	if created {
		if err := chownLike(path, "", root); err != nil {
			return fmt.Errorf("appending to %s: %w", path, err)
		}
	}
	data := MarshalMailboxLog(recs)
	n, err := f.Write(data)
	if err != nil {
		if n%logRecordSize != 0 {
			if fi, serr := f.Stat(); serr == nil {
				_ = f.Truncate(fi.Size() - int64(n%logRecordSize))
			}
		}
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("appending to %s: fsync: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	if fi.Size() >= MailboxLogRotateSize {
		if err := os.Rename(path, path+".2"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotating %s: %w", path, err)
		}
		created = true
	}
	if created {
		return SyncDir(root)
	}
	return nil
}

// MailboxNameHash is Dovecot's mailbox_name_get_sha128: the first 16 bytes
// of the SHA-1 of a mailbox name, the GUID of rename, delete-dir and
// (un)subscribe records. Dovecot 2.3 hashes the name as IMAP clients see it:
// UTF-8 (not modified UTF-7), with the namespace's hierarchy separator
// ("Entwürfe/Sub" with separator "/"; checked against Dovecot 2.3.19). With a
// namespace separator other than "/", convert the name before hashing.
func MailboxNameHash(storageName string) [16]byte {
	sum := sha1.Sum([]byte(storageName))
	var g [16]byte
	copy(g[:], sum[:16])
	return g
}
