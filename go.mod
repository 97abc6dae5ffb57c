module github.com/twinbox-mail/twinbox

go 1.26.8

require (
	github.com/alecthomas/kong v1.17.0
	go.etcd.io/bbolt v1.5.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
	pgregory.net/rapid v1.3.0
)

require github.com/BurntSushi/toml v1.6.0
