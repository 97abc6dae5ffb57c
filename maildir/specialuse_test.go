package maildir

import (
	"reflect"
	"testing"
)

func TestParseDoveconfSpecialUse(t *testing.T) {
	// doveconf -n of Debian 12's Dovecot 2.3.19.1, plus a second namespace
	// with a prefix and "." separator and a top-level mailbox block.
	out := []byte(`# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf
mail_location = mbox:~/mail:INBOX=/var/mail/%u
namespace inbox {
  inbox = yes
  location = 
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Junk {
    special_use = \Junk
  }
  mailbox "Sent Messages" {
    special_use = \Sent
  }
  mailbox Papierkorb {
    auto = subscribe
    special_use = \Trash
  }
  mailbox Plain {
    auto = create
  }
  prefix = 
}
namespace other {
  separator = .
  prefix = INBOX.
  mailbox INBOX.Archiv.Spam {
    special_use = "\Junk \Archive"
  }
}
mailbox Bin {
  special_use = \Trash
}
passdb {
  driver = pam
}
ssl_key = # hidden, use -P to show it
`)
	got := ParseDoveconfSpecialUse(out)
	want := map[string][]string{
		"Drafts":        {`\Drafts`},
		"Junk":          {`\Junk`},
		"Sent Messages": {`\Sent`},
		"Papierkorb":    {`\Trash`},
		"Archiv/Spam":   {`\Junk`, `\Archive`},
		"Bin":           {`\Trash`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := ParseDoveconfSpecialUse([]byte("}\n}\nmailbox {\n special_use = \\Trash\n")); len(got) != 0 {
		t.Errorf("garbage: got %q", got)
	}
}
