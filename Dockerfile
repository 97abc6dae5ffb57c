# A small image for ad-hoc syncs and backups:
#   docker build -t twinbox .
#   docker run --rm -v /srv/mail:/mail twinbox sync /mail/a/bob/Maildir /mail/b/bob/Maildir
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /twinbox .

FROM gcr.io/distroless/static-debian12
COPY --from=build /twinbox /usr/local/bin/twinbox
ENTRYPOINT ["/usr/local/bin/twinbox"]
