module github.com/twinbox-mail/twinbox

go 1.26.8

require (
	github.com/alecthomas/kong v1.17.0
	github.com/gliderlabs/ssh v0.3.8
	go.etcd.io/bbolt v1.5.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
	pgregory.net/rapid v1.3.0
)

require github.com/BurntSushi/toml v1.6.0

require github.com/anmitsu/go-shlex v0.0.0-20200514113438-38f4b401e2be // indirect

require (
	github.com/emersion/go-imap/v2 v2.0.0-beta.8
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
)
