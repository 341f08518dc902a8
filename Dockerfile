# syntax=docker/dockerfile:1
#
# The clusterset-controller image, for those who build with Docker (BuildKit):
#
#   docker build -t clusterset-controller:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/clusterset-controller:TAG --push .
#
# The result matches what `make images` builds without Docker (a static binary
# at /clusterset-controller, CA certificates, user 65532:65532); distroless adds
# /etc/passwd, tzdata and a few empty directories. .github/workflows/release.yaml
# runs this file on tag pushes. docs/images.md compares the two.

ARG GO_VERSION=1.26

# The builder runs on the build machine's platform and cross-compiles: Go needs
# no emulator for that, so a multi-arch build stays as fast as a single one.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
# Modules first, in their own layer, so that a source change does not
# download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o /out/clusterset-controller ./cmd/clusterset-controller

# static:nonroot has no shell and no libc (the binary needs neither), the CA
# certificates of Debian's ca-certificates package and the nonroot user.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/clusterset-controller /clusterset-controller
USER 65532:65532
LABEL org.opencontainers.image.source="https://github.com/clusterset/clusterset" \
      org.opencontainers.image.title="clusterset-controller" \
      org.opencontainers.image.description="clusterset's Multi-Cluster Services controller (sigs.k8s.io/mcs-api), one per member cluster"
EXPOSE 8080/tcp 8081/tcp
ENTRYPOINT ["/clusterset-controller"]
