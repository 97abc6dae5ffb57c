package dovecot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// fetchFields are the doveadm fetch fields Read asks for, in this order; "text" (the
// whole message as stored) follows them as the last field of every record.
var fetchFields = []string{"mailbox", "mailbox-guid", "uid", "guid", "flags",
	"date.received.unixtime", "size.physical"}

// Read reads the Maildir root with doveadm and returns what Dovecot sees. Unless the
// Snapshot option is given, it first calls Own(root) and reads in place (see the package
// comment for what doveadm may write). An error means doveadm could not be run or its
// output not understood; everything Dovecot complained about is in View.Warnings.
//
// The doveadm commands (each with -c CONFIG -o mail_location=maildir:ROOT[:opts], run
// as the judge's user, $USER set, no -u):
//
//	doveadm -f json mailbox list
//	doveadm -f json mailbox list -s
//	doveadm -f json mailbox status 'guid uidvalidity uidnext messages' '*'
//	doveadm -f pager fetch 'mailbox mailbox-guid uid guid flags date.received.unixtime size.physical text' ALL
func (j *Judge) Read(root string, opts ...Option) (*View, error) {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	readRoot := abs
	if o.snapshot {
		j.snaps++
		readRoot = filepath.Join(j.dir, fmt.Sprintf("snapshot-%d", j.snaps))
		if err := CopyTree(abs, readRoot); err != nil {
			return nil, fmt.Errorf("dovecot: snapshot of %s: %v", abs, err)
		}
		defer os.RemoveAll(readRoot)
		if err := j.chownTree(readRoot); err != nil {
			return nil, err
		}
	} else if err := j.Own(abs); err != nil {
		return nil, err
	}

	v := &View{Root: abs}
	warn := func(r *runResult) { v.Warnings = append(v.Warnings, r.warnings...) }

	// Mailbox names (selectable or not).
	res, err := j.run(o, readRoot, "-f", "json", "mailbox", "list")
	if err != nil {
		return nil, err
	}
	warn(res)
	names, err := parseJSONRows(res.stdout)
	if err != nil {
		return nil, fmt.Errorf("dovecot: mailbox list: %v", err)
	}

	// Subscriptions.
	res, err = j.run(o, readRoot, "-f", "json", "mailbox", "list", "-s")
	if err != nil {
		return nil, err
	}
	warn(res)
	subs, err := parseJSONRows(res.stdout)
	if err != nil {
		return nil, fmt.Errorf("dovecot: mailbox list -s: %v", err)
	}
	for _, row := range subs {
		v.Subscriptions = append(v.Subscriptions, row["mailbox"])
	}
	sort.Strings(v.Subscriptions)

	// Mailbox status of the selectable ones.
	res, err = j.run(o, readRoot, "-f", "json", "mailbox", "status", "guid uidvalidity uidnext messages", "*")
	if err != nil {
		return nil, err
	}
	warn(res)
	statuses, err := parseJSONRows(res.stdout)
	if err != nil {
		return nil, fmt.Errorf("dovecot: mailbox status: %v", err)
	}
	byName := map[string]*Mailbox{}
	get := func(name string) *Mailbox {
		if mb := byName[name]; mb != nil {
			return mb
		}
		mb := &Mailbox{Name: name, NoSelect: true}
		byName[name] = mb
		return mb
	}
	for _, row := range names {
		get(row["mailbox"])
	}
	for _, row := range statuses {
		mb := get(row["mailbox"])
		mb.NoSelect = false
		mb.GUID = row["guid"]
		mb.UIDValidity, err = parseU32(row["uidvalidity"])
		if err == nil {
			mb.UIDNext, err = parseU32(row["uidnext"])
		}
		if err == nil {
			mb.Count, err = strconv.Atoi(row["messages"])
		}
		if err != nil {
			return nil, fmt.Errorf("dovecot: mailbox status of %q: %v", mb.Name, err)
		}
	}

	// Messages with their full text.
	fields := strings.Join(append(append([]string{}, fetchFields...), "text"), " ")
	res, err = j.run(o, readRoot, "-f", "pager", "fetch", fields, "ALL")
	if err != nil {
		return nil, err
	}
	warn(res)
	msgs, perr := parsePagerFetch(res.stdout)
	if perr != nil {
		// Typically a message Dovecot could not read (see the warnings): fall back to the
		// metadata alone, without body hashes.
		v.Warnings = append(v.Warnings, fmt.Sprintf("twinbox judge: cannot parse doveadm fetch output (%v); body hashes missing", perr))
		metaFields := strings.Join(fetchFields, " ")
		res, err = j.run(o, readRoot, "-f", "json", "fetch", metaFields, "ALL")
		if err != nil {
			return nil, err
		}
		rows, err := parseJSONRows(res.stdout)
		if err != nil {
			return nil, fmt.Errorf("dovecot: fetch: %v", err)
		}
		msgs = msgs[:0]
		for i, row := range rows {
			m, err := fetchedFromMap(row)
			if err != nil {
				return nil, fmt.Errorf("dovecot: fetch record %d: %v", i, err)
			}
			msgs = append(msgs, m)
		}
	}
	for _, m := range msgs {
		mb := get(m.mailbox)
		if mb.NoSelect {
			v.Warnings = append(v.Warnings, fmt.Sprintf("twinbox judge: fetch returned UID %d of mailbox %q which mailbox status did not list", m.msg.UID, m.mailbox))
		} else if m.mailboxGUID != mb.GUID {
			v.Warnings = append(v.Warnings, fmt.Sprintf("twinbox judge: mailbox %q: fetch says mailbox GUID %s, status says %s", m.mailbox, m.mailboxGUID, mb.GUID))
		}
		mb.Messages = append(mb.Messages, m.msg)
	}

	for _, mb := range byName {
		sort.Slice(mb.Messages, func(a, b int) bool {
			x, y := mb.Messages[a], mb.Messages[b]
			if x.UID != y.UID {
				return x.UID < y.UID
			}
			return x.GUID < y.GUID
		})
		v.Mailboxes = append(v.Mailboxes, *mb)
	}
	sort.Slice(v.Mailboxes, func(a, b int) bool { return v.Mailboxes[a].Name < v.Mailboxes[b].Name })
	return v, nil
}

func parseU32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// parseJSONRows parses doveadm's json formatter output: an array of objects whose
// values are strings. Empty output means no rows.
func parseJSONRows(out []byte) ([]map[string]string, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, nil
	}
	var rows []map[string]string
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("%v in %q", err, truncate(out, 200))
	}
	return rows, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

type fetched struct {
	mailbox, mailboxGUID string
	msg                  Message
}

func fetchedFromMap(row map[string]string) (fetched, error) {
	f := fetched{mailbox: row["mailbox"], mailboxGUID: row["mailbox-guid"]}
	var err error
	if f.msg.UID, err = parseU32(row["uid"]); err != nil {
		return f, fmt.Errorf("uid: %v", err)
	}
	f.msg.GUID = row["guid"]
	f.msg.Flags = parseFlags(row["flags"])
	if f.msg.Received, err = strconv.ParseInt(row["date.received.unixtime"], 10, 64); err != nil {
		return f, fmt.Errorf("date.received.unixtime: %v", err)
	}
	if f.msg.Size, err = strconv.ParseInt(row["size.physical"], 10, 64); err != nil {
		return f, fmt.Errorf("size.physical: %v", err)
	}
	return f, nil
}

// parseFlags splits doveadm's flags field and drops \Recent, which is per session and
// not replicated. The result is sorted.
func parseFlags(s string) []string {
	var flags []string
	for _, f := range strings.Fields(s) {
		if strings.EqualFold(f, `\Recent`) {
			continue
		}
		flags = append(flags, f)
	}
	sort.Strings(flags)
	return flags
}

// parsePagerFetch parses `doveadm -f pager fetch '<fetchFields> text'`. The pager
// formatter prints every field as "name: value\n" except a streamed one (text), which
// is "text:\n" followed by the raw bytes, nothing appended; records after the first
// start with "\f\n". The length of the text is taken from size.physical, and the record
// boundary after it is checked, so message bytes are never mistaken for framing.
func parsePagerFetch(out []byte) ([]fetched, error) {
	var recs []fetched
	p := out
	for n := 0; len(p) > 0; n++ {
		if n > 0 {
			if !bytes.HasPrefix(p, []byte("\f\n")) {
				return recs, fmt.Errorf("record %d: expected form feed, got %q", n, truncate(p, 60))
			}
			p = p[2:]
		}
		row := map[string]string{}
		for _, name := range fetchFields {
			prefix := name + ": "
			if !bytes.HasPrefix(p, []byte(prefix)) {
				return recs, fmt.Errorf("record %d: expected field %q, got %q", n, name, truncate(p, 60))
			}
			nl := bytes.IndexByte(p, '\n')
			if nl < 0 {
				return recs, fmt.Errorf("record %d: unterminated field %q", n, name)
			}
			row[name] = string(p[len(prefix):nl])
			p = p[nl+1:]
		}
		f, err := fetchedFromMap(row)
		if err != nil {
			return recs, fmt.Errorf("record %d: %v", n, err)
		}
		const textHdr = "text:\n"
		if !bytes.HasPrefix(p, []byte(textHdr)) {
			return recs, fmt.Errorf("record %d (uid %d): expected text, got %q", n, f.msg.UID, truncate(p, 60))
		}
		p = p[len(textHdr):]
		if f.msg.Size < 0 || int64(len(p)) < f.msg.Size {
			return recs, fmt.Errorf("record %d (uid %d): text shorter than size.physical %d", n, f.msg.UID, f.msg.Size)
		}
		body := p[:f.msg.Size]
		p = p[f.msg.Size:]
		if len(p) > 0 && !bytes.HasPrefix(p, []byte("\f\n")) {
			return recs, fmt.Errorf("record %d (uid %d): text is not size.physical=%d bytes long", n, f.msg.UID, f.msg.Size)
		}
		sum := sha256.Sum256(body)
		f.msg.BodySHA256 = hex.EncodeToString(sum[:])
		recs = append(recs, f)
	}
	return recs, nil
}
