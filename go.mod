module github.com/twinbox-mail/twinbox

go 1.26.8

require (
	go.etcd.io/bbolt v1.5.0
	golang.org/x/sys v0.50.0
)
