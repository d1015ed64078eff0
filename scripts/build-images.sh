#!/usr/bin/env bash
# Builds the two images, mesh-proxy and mesh-controller (which is also the CLI's), from
# images/*/Dockerfile: each FROM scratch, holding the binaries and exactly the shared
# libraries they load, so the build needs no registry and no network.
#
#   scripts/build-images.sh [--bin-dir DIR] [--registry R] [--tag T] [--out DIR]
#
#   --bin-dir DIR   take mesh-proxy, mesh-controller and mesh from DIR instead of
#                   building them (`cargo build --profile dist`)
#   --registry R    image names' registry (default: ghcr.io/mesh-rs, as `mesh install`)
#   --tag T         image tag (default: the workspace version, as `mesh install`)
#   --out DIR       where the build contexts go (default: target/images)
#
# Uses buildah if it is installed (as root: `--storage-driver vfs` works anywhere; set
# BUILDAH_ARGS="--root DIR --runroot DIR" to keep the images apart), else docker. Push
# with `buildah push` / `docker push`, or load into kind with `kind load docker-image`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir="" registry="ghcr.io/mesh-rs" out="target/images"
tag="$(sed -n 's/^version = "\(.*\)"/\1/p' cli/Cargo.toml | head -n 1)"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --registry) registry="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) sed -n '2,18p' "$0" >&2; exit 64 ;;
    esac
done

if [ -z "$bin_dir" ]; then
    # The proxy on its own, as it ships (see scripts/bench.sh: built with the others,
    # Cargo would unify features into a bigger binary).
    cargo build --profile dist -p mesh-proxy --bin mesh-proxy
    cargo build --profile dist -p mesh-controller -p mesh-cli --bin mesh-controller --bin mesh
    bin_dir="target/dist"
fi

# Installs a binary without its debug information (the `dist` profile keeps it for
# `perf` on a benchmark machine; an image has no use for it and it is four fifths of the
# file), keeping the symbol table, so backtraces still name functions.
install_binary() {
    install -m 0755 "$1" "$2"
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug "$2"
    fi
}

# Copies a file into ROOT at the same path, following a symlink to its target while
# keeping the link itself.
copy_into() {
    local root="$1" file="$2"
    mkdir -p "$root$(dirname "$file")"
    if [ -L "$file" ]; then
        local target
        target="$(readlink -f "$file")"
        copy_into "$root" "$target"
        ln -sfn "$target" "$root$file"
    else
        cp -p "$file" "$root$file"
    fi
}

# Copies each binary's shared libraries (as the loader resolves them here) into ROOT.
copy_libraries() {
    local root="$1"
    shift
    local lib
    # `ldd` prints `name => /path (addr)` per library, the loader as `/path (addr)`,
    # and with several files a `file:` line before each.
    for lib in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | sort -u); do
        copy_into "$root" "$lib"
    done
}

# A new root filesystem laid out as this machine's: where /lib, /lib64 and /bin are
# links into /usr (merged /usr), the same links, so every path the loader and
# iptables use (their compiled-in library directories) exists once.
new_root() {
    local root="$1" dir
    rm -rf "$root" && mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/tmp" "$root/etc"
    for dir in lib lib64 bin sbin; do
        if [ -L "/$dir" ]; then
            ln -sfn "$(readlink "/$dir")" "$root/$dir"
            mkdir -p "$root/$(readlink -f "/$dir")"
        fi
    done
    chmod 1777 "$root/tmp"
}

# /etc/passwd and /etc/group naming the image's user, so tools that look the uid up
# find a name; nothing else of /etc.
users() {
    local root="$1" name="$2" id="$3"
    mkdir -p "$root/etc"
    printf 'root:x:0:0:root:/:/sbin/nologin\n%s:x:%s:%s:%s:/:/sbin/nologin\n' "$name" "$id" "$id" "$name" > "$root/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\n' "$name" "$id" > "$root/etc/group"
}

# --- the proxy: mesh-proxy, and iptables for `mesh-proxy init` -------------------------
proxy="$out/proxy/rootfs"
rm -rf "$out/proxy" && new_root "$proxy" && mkdir -p "$proxy/run"
install_binary "$bin_dir/mesh-proxy" "$proxy/usr/bin/mesh-proxy"
xtables="$(readlink -f "$(command -v xtables-nft-multi)")"
install -m 0755 "$xtables" "$proxy/usr/sbin/xtables-nft-multi"
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sfn xtables-nft-multi "$proxy/usr/sbin/$name"
done
# iptables loads its matches and targets (tcp, owner, REDIRECT, ...) at run time.
modules="$(readlink -f "$(dirname "$(ldd "$xtables" | awk '$1 ~ /^libxtables/ {print $3}')")/xtables")"
mkdir -p "$proxy$modules" && cp -p "$modules"/*.so "$proxy$modules/"
copy_libraries "$proxy" "$bin_dir/mesh-proxy" "$xtables" "$modules"/*.so
cp -p /etc/protocols "$proxy/etc/protocols"
users "$proxy" mesh-proxy 2102
cp images/proxy/Dockerfile "$out/proxy/Dockerfile"

# --- the controller and the CLI --------------------------------------------------------
controller="$out/controller/rootfs"
rm -rf "$out/controller" && new_root "$controller"
install_binary "$bin_dir/mesh-controller" "$controller/usr/bin/mesh-controller"
install_binary "$bin_dir/mesh" "$controller/usr/bin/mesh"
copy_libraries "$controller" "$bin_dir/mesh-controller" "$bin_dir/mesh"
users "$controller" mesh-controller 2103
cp images/controller/Dockerfile "$out/controller/Dockerfile"

for image in proxy controller; do
    name="$registry/mesh-$image:$tag"
    if command -v buildah >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        buildah ${BUILDAH_ARGS:-} bud --quiet --layers=false -t "$name" -f "$out/$image/Dockerfile" "$out/$image"
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        docker build -q -t "$name" "$out/$image"
    else
        echo "build-images.sh: neither buildah nor a running docker engine; the contexts are in $out" >&2
        exit 1
    fi
    echo "built $name"
done
