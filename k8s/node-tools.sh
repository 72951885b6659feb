#!/usr/bin/env bash
# Builds what a real single Kubernetes node needs on this kind of machine (make node-tools), next to
# the control plane of k8s/k8s-tools.sh: kubelet, kube-scheduler and kube-proxy (k8s.io/kubernetes,
# the same wrapper module as the control plane), containerd with its runc shim and ctr, CoreDNS with
# the plugins a cluster DNS needs, and the pause image (the Pod sandbox) compiled from the
# Kubernetes sources. The Debian packages the node runs with (runc, CNI plugins, buildah, ...) are
# installed when missing, if run as root. The versions are pinned in k8s/k8s.mk, which passes them
# in the environment.
#
# usage: KUBERNETES_VERSION=v1.37.2 CONTAINERD_VERSION=v2.4.2 COREDNS_VERSION=v1.15.0 \
#          [COREDNS_PLUGINS="kubernetes errors ..."] k8s/node-tools.sh <tools dir>
#   binaries into <tools dir>/bin, the pause image (docker-archive, for
#   `ctr -n k8s.io images import`) into <tools dir>/images/pause.tar
#
# Like k8s-tools.sh, each binary is built once (a stamp per binary in <tools dir>/bin/.versions).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/tools-lib.sh"

tools=${1:?usage: k8s/node-tools.sh <tools dir>}
: "${KUBERNETES_VERSION:?}" "${CONTAINERD_VERSION:?}" "${COREDNS_VERSION:?}"
# CoreDNS plugins (package names under github.com/coredns/coredns/plugin) compiled in: the cluster
# DNS of the node tests listens on the bridge address only (bind), serves cluster.local and
# forwards nothing (there is no upstream, so no forward plugin).
COREDNS_PLUGINS=${COREDNS_PLUGINS:-kubernetes bind errors health ready cache log loop}

# --- Debian packages the node runs with ----------------------------------------------------------
# PACKAGE:PROBE WHY: PROBE is a command (found on PATH or in /usr/sbin, /sbin) or an absolute path.
# Not listed, checked against the v1.37 and containerd v2.4 sources: conntrack (kube-proxy clears
# conntrack entries over netlink since Kubernetes 1.32, kubeadm no longer requires the tool), socat
# (containerd 2.x forwards ports in Go inside the Pod's network namespace) and ethtool (neither the
# kubelet nor the CNI bridge plugin runs it). mount and losetup, which the kubelet runs, come with
# Debian's essential `mount` package.
host_packages=(
  "runc:runc the OCI runtime containerd's shim starts containers with"
  "containernetworking-plugins:/usr/lib/cni/bridge the CNI plugins (bridge, host-local, loopback) in /usr/lib/cni"
  "iptables:iptables the kubelet's KUBE-FIREWALL and canary chains (iptables-nft)"
  "nftables:nft kube-proxy in nftables mode runs nft"
  "tini:tini a subreaper for containerd, so exited shims are reaped"
  "buildah:buildah builds and exports the images containerd imports (no registry here)"
  "mmdebstrap:mmdebstrap a Debian root filesystem for the base image"
  "gcc:gcc compiles the pause binary"
  "libc6-dev:/usr/include/stdio.h the static C library the pause binary is linked with"
)
have() {
  case $1 in
    /*) [[ -e $1 ]] ;;
    *) command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]] ;;
  esac
}
missing=()
for entry in "${host_packages[@]}"; do
  spec=${entry%% *}
  have "${spec#*:}" || missing+=("$entry")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    pkgs=()
    for entry in "${missing[@]}"; do spec=${entry%% *}; pkgs+=("${spec%%:*}"); done
    echo "==> installing Debian packages: ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  else
    for entry in "${missing[@]}"; do
      spec=${entry%% *}
      echo "missing: ${spec%%:*} (${entry#* }): apt-get install ${spec%%:*}"
    done
    echo "install them as root (or run 'make node-tools' as root, which does it)"
    exit 1
  fi
fi

tools_init "$tools" "the Kubernetes node for the node tests"
mkdir -p "$tools/images"
images=$(cd "$tools/images" && pwd)

# --- Kubernetes: kubelet, kube-scheduler, kube-proxy (the control plane's wrapper module) --------
node_tools=(kubelet kube-scheduler kube-proxy)
kubernetes_build "${node_tools[@]}"

# --- containerd: the daemon, its runc shim (v2) and ctr ------------------------------------------
# 2.x, not Debian's 1.6: containerd's release support table pairs Kubernetes 1.37 with containerd
# 2.3/2.4, and 1.6 is out of support. Its go.mod has no replace directives; the wrapper module only
# gives the three commands one build list. CGO_ENABLED=0, as containerd's release builds its shim:
# static binaries (the btrfs snapshotter, which needs cgo, drops out). The build tags and the
# version variable are the ones containerd's Makefile sets.
containerd_pkg=github.com/containerd/containerd/v2
containerd_flags="-X $containerd_pkg/version.Version=$CONTAINERD_VERSION"
for cmd in containerd containerd-shim-runc-v2 ctr; do
  built "$cmd" "$CONTAINERD_VERSION" && continue
  grep -Eqs "[[:space:]]$containerd_pkg $CONTAINERD_VERSION( |\$)" "$src/containerd/go.mod" \
    || wrapper containerd "$containerd_pkg" "$CONTAINERD_VERSION" "$CONTAINERD_VERSION"
  tags=urfave_cli_no_docs
  [[ $cmd == containerd-shim-runc-v2 ]] && tags+=" no_grpc"
  CGO_ENABLED=0 GO_TAGS=$tags gobuild "$cmd" "$src/containerd" "$containerd_pkg/cmd/$cmd" \
    "$CONTAINERD_VERSION" "$containerd_flags"
done

# --- CoreDNS: coremain and only the plugins the node's DNS uses ----------------------------------
# CoreDNS's own main imports core/plugin (zplugin.go, generated from plugin.cfg), which links all
# ~60 plugins and their cloud SDKs. A plugin registers itself when its package is imported, and the
# order a server runs its plugins in comes from core/dnsserver/zdirectives.go, not from the
# imports; so a main that imports coremain and a few plugins is a working, smaller CoreDNS (about
# 800 packages instead of 1400). Plugins these import (metrics, metadata, transfer) are linked
# too. The stamp holds the plugin list: changing it rebuilds.
coredns_stamp="$COREDNS_VERSION plugins: $COREDNS_PLUGINS"
if ! built coredns "$coredns_stamp"; then
  wrapper coredns github.com/coredns/coredns "$COREDNS_VERSION" "$COREDNS_VERSION"
  {
    echo "// Generated by k8s/node-tools.sh: CoreDNS $COREDNS_VERSION with the plugins: $COREDNS_PLUGINS."
    echo "package main"
    echo
    echo "import ("
    printf '\t"github.com/coredns/coredns/coremain"\n\n'
    for p in $(printf '%s\n' $COREDNS_PLUGINS | sort -u); do
      printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"
    done
    echo ")"
    echo
    echo "func main() { coremain.Run() }"
  } > "$src/coredns/main.go"
  CGO_ENABLED=0 gobuild coredns "$src/coredns" . "$coredns_stamp" \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
fi

# --- the pause image: pause.c of k8s.io/kubernetes, static, alone in an image --------------------
pause_ref=localhost/sensorstream-pause:$KUBERNETES_VERSION
if ! built pause "$KUBERNETES_VERSION"; then
  start=$SECONDS
  pause_dir=$(kubernetes_module_dir)/build/pause
  # Upstream's flags (build/pause/Makefile): -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV),
  # TAG the pause release the sources are, REV the Kubernetes tag; `pause -v` prints it.
  pause_tag=$(sed -n 's/^TAG ?= *//p' "$pause_dir/Makefile")
  echo "==> building pause ${pause_tag:-?} (from k8s.io/kubernetes $KUBERNETES_VERSION build/pause/linux/pause.c)"
  gcc -Os -Wall -Werror -static -DVERSION="v${pause_tag:-unknown}-$KUBERNETES_VERSION" \
    -o "$bin/pause.new" "$pause_dir/linux/pause.c"
  mv "$bin/pause.new" "$bin/pause"
  echo "$KUBERNETES_VERSION" > "$bin/.versions/pause"
  echo "    pause built in $((SECONDS - start)) s"
fi
# The image is stamped with its name and the checksum of the binary it holds.
pause_stamp="$pause_ref $(sha256sum < "$bin/pause" | cut -d' ' -f1)"
if [[ ! -f $images/pause.tar || $(cat "$bin/.versions/pause.tar" 2>/dev/null) != "$pause_stamp" ]]; then
  start=$SECONDS
  echo "==> building the image $pause_ref into $images/pause.tar (buildah)"
  # A storage of its own, removed afterwards: nothing is left in the host's buildah storage.
  store=$(mktemp -d "$tools/images/.buildah.XXXXXX")
  trap 'rm -rf "$store"' EXIT
  b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
  ctr=$("${b[@]}" from scratch)
  "${b[@]}" copy "$ctr" "$bin/pause" /pause >/dev/null
  # As upstream's image: the entrypoint, and the nobody-like user 65535.
  "${b[@]}" config --entrypoint '["/pause"]' --user 65535:65535 \
    --created-by "gcc -static pause.c (k8s.io/kubernetes $KUBERNETES_VERSION)" "$ctr"
  "${b[@]}" commit -q "$ctr" "$pause_ref" >/dev/null
  rm -f "$images/pause.tar.new"
  "${b[@]}" push -q "$pause_ref" "docker-archive:$images/pause.tar.new:$pause_ref"
  "${b[@]}" rm "$ctr" >/dev/null
  mv "$images/pause.tar.new" "$images/pause.tar"
  echo "$pause_stamp" > "$bin/.versions/pause.tar"
  echo "    pause image built in $((SECONDS - start)) s"
fi

echo "node tools in $bin: ${node_tools[*]} containerd containerd-shim-runc-v2 ctr coredns pause;" \
  "image $pause_ref in $images/pause.tar"
