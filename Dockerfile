# A small image for ad-hoc syncs and backups:
#   docker build -t twinbox .
#   docker run --rm -v /srv/mail:/mail twinbox sync /mail/a/bob/Maildir /mail/b/bob/Maildir
# To another host, with the built-in SSH client or tcps: (the image has no
# OpenSSH client, so remote:/remoteprefix: need a bigger image):
#   docker run --rm -v /srv/mail:/mail -v /etc/twinbox:/etc/twinbox:ro -v ~/.ssh:/root/.ssh:ro \
#     twinbox sync -u bob@example.org ssh://mx2:2222
# As a server: `twinbox sshd` (port 2222) or `twinbox listen` (8946/tcp, tcps as configured):
#   docker run -d -p 2222:2222 -v /srv/mail:/srv/mail -v /etc/twinbox:/etc/twinbox twinbox sshd
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /twinbox .

FROM gcr.io/distroless/static-debian12
COPY --from=build /twinbox /usr/local/bin/twinbox
EXPOSE 2222 8946
ENTRYPOINT ["/usr/local/bin/twinbox"]
