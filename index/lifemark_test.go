package index

import (
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
)

// TestLifeMark: which DELETE records of dovecot.mailbox.log are of a
// mailbox's current life, by its mark (Box.Revived), with whole-second
// log times.
func TestLifeMark(t *testing.T) {
	g, other := model.MailboxGUID{1}, model.MailboxGUID{2}
	t0 := time.Unix(1790000000, 0)
	del := func(g model.MailboxGUID, at time.Time) maildir.LogRecord {
		return maildir.LogRecord{Type: maildir.LogDeleteMailbox, GUID: [16]byte(g), Time: at}
	}
	sub := maildir.LogRecord{Type: maildir.LogSubscribe, GUID: [16]byte(g), Time: t0.Add(5 * time.Second)}
	one := []maildir.LogRecord{del(g, t0), del(other, t0.Add(time.Second)), sub}
	two := append(append([]maildir.LogRecord{}, one...), del(g, t0))
	later := append(append([]maildir.LogRecord{}, one...), del(g, t0.Add(2*time.Second)))
	sec := int64(time.Second)
	for _, c := range []struct {
		name string
		recs []maildir.LogRecord
		mark int64 // the box's Revived
		want time.Time
	}{
		{"no record, no mark", nil, 0, time.Time{}},
		{"a record, no mark", one, 0, t0},
		{"the record the mark counted", one, t0.Unix()*sec + 1, time.Time{}},
		{"a second record in the same second", two, t0.Unix()*sec + 1, t0},
		{"both counted", two, t0.Unix()*sec + 2, time.Time{}},
		{"a later second", later, t0.Unix()*sec + 1, t0.Add(2 * time.Second)},
		{"an old index's mark covers its whole second", two, t0.Unix() * sec, time.Time{}},
		{"an old index's mark, a later second", later, t0.Unix() * sec, t0.Add(2 * time.Second)},
	} {
		b := &Box{Mailbox: model.Mailbox{GUID: g}, Revived: c.mark}
		if got := deleteTime(c.recs, b); !got.Equal(c.want) {
			t.Errorf("%s: deleteTime = %v, want %v", c.name, got, c.want)
		}
	}
	if m := lifeMark(two, g); m != t0.Unix()*sec+2 {
		t.Errorf("lifeMark(two) = %d, want %d", m, t0.Unix()*sec+2)
	}
	if m := lifeMark(later, g); m != t0.Add(2*time.Second).Unix()*sec+1 {
		t.Errorf("lifeMark(later) = %d", m)
	}
	if m := lifeMark(one, model.MailboxGUID{3}); m != 0 {
		t.Errorf("lifeMark of a GUID without records = %d, want 0", m)
	}
	// A mark taken now covers every record there now: none is of this life.
	for _, recs := range [][]maildir.LogRecord{one, two, later} {
		if got := deleteTime(recs, &Box{Mailbox: model.Mailbox{GUID: g}, Revived: lifeMark(recs, g)}); !got.IsZero() {
			t.Errorf("deleteTime right after lifeMark = %v, want none", got)
		}
	}
}
