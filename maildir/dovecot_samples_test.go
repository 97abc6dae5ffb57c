package maildir

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// Files written by Dovecot 2.3.19.1 (doveadm save, mailbox create,
// subscribe, flags add, mailbox delete; namespace separator "/", Maildir++),
// copied byte for byte. UID 10 was added by twinbox; Dovecot then appended
// UID 11 in place, leaving the header's N11 behind.
const (
	sampleUidlist = "3 V1795865143 N11 G79eb242c37ba0a6b3261000083ecc375\n" +
		"1 :1795865143.M740476P24882.vm,S=28,W=32\n" +
		"2 :1795865143.M750746P24883.vm,S=28,W=32\n" +
		"10 :1795865164.M919234P25487Q1.twinbox.test,S=35,W=38\n" +
		"11 :1795865167.M715930P25676.vm,S=28,W=32\n"
	sampleKeywords      = "0 $Junk\n1 NonJunk\n2 Custom\n"
	sampleSubscriptions = "V\t2\n\nEntw&APw-rfe\tSub\nINBOX\nA&-B\n"
	// subscribe "Entwürfe/Sub", "INBOX", "A&B"; delete mailbox "Archive"
	// (its GUID, then the hash of its name).
	sampleMailboxLog = "04000000dae46deedfcd93c168ce7d14a8969cab6b0aba37" +
		"04000000dc063b45c92f64f79f0d1ed01e6d5b316b0aba37" +
		"040000008d2af872c4736d68ec01043a5f8420e26b0aba37" +
		"010000004c63422d37ba0a6b3461000083ecc3756b0aba37" +
		"020000002621c6fd51a58e1d1d5c491aac7148866b0aba37"
)

func TestDovecotSamples(t *testing.T) {
	u, err := ParseUidlist([]byte(sampleUidlist))
	if err != nil {
		t.Fatal(err)
	}
	if u.UIDValidity != 1795865143 || u.NextUID != 12 || len(u.Records) != 4 || u.Records[3].UID != 11 ||
		hex.EncodeToString(u.GUID[:]) != "79eb242c37ba0a6b3261000083ecc375" {
		t.Errorf("uidlist = %+v", u)
	}
	// Apart from the raised N, we write it back as Dovecot wrote it.
	u.NextUID = 11
	if got := string(u.Marshal()); got != sampleUidlist {
		t.Errorf("Marshal =\n%s", got)
	}

	kw, err := ParseKeywords([]byte(sampleKeywords))
	if err != nil || !reflect.DeepEqual(kw, []string{"$Junk", "NonJunk", "Custom"}) {
		t.Errorf("keywords = %q, %v", kw, err)
	}
	if got := string(MarshalKeywords(kw)); got != sampleKeywords {
		t.Errorf("MarshalKeywords = %q", got)
	}

	subs, err := ParseSubscriptions([]byte(sampleSubscriptions))
	if err != nil || !reflect.DeepEqual(subs, []string{"Entw&APw-rfe/Sub", "INBOX", "A&-B"}) {
		t.Errorf("subscriptions = %q, %v", subs, err)
	}
	if got := string(MarshalSubscriptions(subs)); got != sampleSubscriptions {
		t.Errorf("MarshalSubscriptions = %q", got)
	}
	root := t.TempDir()
	writeFile(t, filepath.Join(root, SubscriptionsName), sampleSubscriptions)
	names, _, err := Location{Root: root}.ReadSubscriptions()
	if err != nil || !reflect.DeepEqual(names, []string{"Entwürfe/Sub", "INBOX", "A&B"}) {
		t.Errorf("Location.ReadSubscriptions = %q, %v", names, err)
	}

	data, _ := hex.DecodeString(sampleMailboxLog)
	recs, _ := ParseMailboxLog(data)
	at := time.Unix(1795865143, 0).UTC()
	want := []LogRecord{
		{LogSubscribe, MailboxNameHash("Entwürfe/Sub"), at},
		{LogSubscribe, MailboxNameHash("INBOX"), at},
		{LogSubscribe, MailboxNameHash("A&B"), at},
		{LogDeleteMailbox, guid(t, "4c63422d37ba0a6b3461000083ecc375"), at},
		{LogDeleteDir, MailboxNameHash("Archive"), at},
	}
	if !reflect.DeepEqual(recs, want) {
		t.Errorf("mailbox log =\n%v\nwant\n%v", recs, want)
	}
	if got := MarshalMailboxLog(recs); hex.EncodeToString(got) != sampleMailboxLog {
		t.Errorf("MarshalMailboxLog = %x", got)
	}

	// The directories Dovecot made for those names.
	for _, d := range []string{".Entw&APw-rfe.Sub", ".A&-B"} {
		if err := os.MkdirAll(filepath.Join(root, d, "cur"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mbs, err := Location{Root: root}.ListMailboxes()
	if err != nil || len(mbs) != 2 || mbs[0].Name != "A&B" || mbs[1].Name != "Entwürfe/Sub" {
		t.Errorf("ListMailboxes = %v, %v", mbs, err)
	}
	for _, name := range []string{"1795865143.M740476P24882.vm,S=28,W=32:2,Sa", "1795865143.M750746P24883.vm,S=28,W=32:2,Fb"} {
		f, err := ParseFileName(name)
		if err != nil || f.Size != 28 || f.VSize != 32 || f.String() != name {
			t.Errorf("ParseFileName(%q) = %+v, %v", name, f, err)
		}
	}
}
