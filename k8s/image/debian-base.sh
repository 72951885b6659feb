#!/usr/bin/env bash
# Make the Dockerfile's base image, docker.io/library/debian:bookworm-slim, in buildah's local
# storage, for machines that build with buildah and can reach Debian's mirror but no container
# registry (`make image` runs this before `buildah build --pull=never`). Does nothing when an image
# of that name is already there (pulled, or made by an earlier run).
#
# The root filesystem comes from mmdebstrap: Debian bookworm, variant minbase (Essential packages,
# Priority: required, apt), merged /usr, from the mirrors this machine's apt uses (/etc/apt/
# sources.list.d/debian.sources or /etc/apt/sources.list, so also bookworm-updates and
# bookworm-security), with documentation, man pages and translations left out and apt set to keep
# no downloaded packages, as in the official slim image. Same release, about the same ~88 packages
# and size (~78 MB), but not the same image as the official one:
#   - package versions are today's from this machine's mirror, not those of the official image's
#     build date (a newer point release or security update may be in either);
#   - the official image is made by debuerreotype (fixed timestamps, its own apt/dpkg settings
#     under /etc/apt/apt.conf.d/docker-* and /etc/dpkg/dpkg.cfg.d/docker); this one has the
#     equivalent settings written below (dpkg.cfg.d/99mmdebstrap, apt.conf.d/99mmdebstrap and
#     docker-clean), not byte-identical files;
#   - its apt sources are this machine's (deb822, possibly a local mirror or a snapshot comment),
#     not the official deb.debian.org entry;
#   - /dev holds the few device nodes mmdebstrap creates (a container runtime mounts its own /dev);
#   - one layer, a label saying where it came from, a different image id.
# For this project that is enough: the Dockerfile only asks apt for bookworm packages.
set -euo pipefail

IMAGE=${DEBIAN_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
SUITE=${DEBIAN_BASE_SUITE:-bookworm}

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "missing: $tool (needed to build the image without Docker). Install it: apt-get install buildah mmdebstrap" >&2
    exit 1
  }
done

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  echo "==> base image $IMAGE already in buildah storage"
  exit 0
fi

# The host's apt sources: mmdebstrap pastes a file given as MIRROR into the new root's sources.
sources=""
for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -s "$candidate" ] && grep -Eq "^[^#]*(Suites:|deb ).*\b$SUITE\b" "$candidate"; then
    sources=$candidate
    break
  fi
done
[ -n "$sources" ] || { echo "no apt sources for Debian $SUITE found in /etc/apt (sources.list or sources.list.d/debian.sources)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/debian-base.XXXXXX")
ctr=""
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# As in the official image: apt removes downloaded packages after installing them and keeps no
# package caches (/var/cache/apt/*.bin), so a Dockerfile's apt-get install leaves no archives behind.
cat > "$work/docker-clean" <<'EOF'
// Written by sensorstream's k8s/image/debian-base.sh: keep no .deb files or package caches.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF

echo "==> building $IMAGE with mmdebstrap ($SUITE, minbase, sources from $sources)"
# merged-usr: the /bin -> usr/bin links made directly, as debootstrap does (the official image is
# made that way); without the hook apt pulls in the usrmerge package and, with it, all of Perl.
# dpkg skips these paths now and for every package the Dockerfile installs later (the file stays
# in /etc/dpkg/dpkg.cfg.d/); the customize hook removes what the first unpack already wrote.
mmdebstrap --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/linda/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --aptopt='Acquire::Languages "none"' \
  --aptopt='APT::AutoRemove::SuggestsImportant "false"' \
  --customize-hook='find "$1/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete' \
  --customize-hook='find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete' \
  --customize-hook='rm -rf "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/groff/* "$1"/usr/share/lintian/* "$1"/usr/share/linda/*' \
  --customize-hook='find "$1/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +' \
  --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
  --customize-hook="cp $work/docker-clean \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
  "$SUITE" "$work/rootfs.tar" "$sources"

echo "==> importing the root filesystem as $IMAGE"
ctr=$(buildah from --pull=never scratch)
buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd '["bash"]' \
  --label io.sensorstream.base="mmdebstrap $SUITE minbase from this machine's apt sources (k8s/image/debian-base.sh)" \
  "$ctr"
buildah commit --rm "$ctr" "$IMAGE" >/dev/null
ctr=""
buildah images "$IMAGE"
