#!/bin/bash
# Build the inspection ramdisk the end-to-end inspection tests, the demo and
# the benchmark boot: a minimal Debian 12 root with ironic-python-agent
# (pins/ipa.txt), packed as one zstd-compressed cpio initramfs, and the
# Debian cloud kernel beside it.  Test and demo tooling, not shipped.
#
#   bash tools/ramdisk/build.sh OUTDIR
#
# writes OUTDIR/vmlinuz, OUTDIR/initramfs (the whole root: the kernel
# unpacks it into RAM and runs tools/ramdisk/init as PID 1) and
# OUTDIR/build.json (build seconds, sizes, kernel version).  Needs root,
# debootstrap, cpio, zstd, dpkg-deb and uv (the project's
# .venv/bin/uv, or $UV).  Callers cache OUTDIR by the hash of the inputs
# (harness/pxefilterd_harness/ramdisk.py): this script, init, pins/ipa.txt.
#
# The Debian mirror is the machine's own (the first URIs: of
# /etc/apt/sources.list.d/debian.sources, else the first deb line of
# /etc/apt/sources.list), or $PXEFILTERD_DEBIAN_MIRROR.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR}

SUITE=bookworm
# What ironic-python-agent runs during inspection, besides Python:
# ip (iproute2), lsblk/lscpu (util-linux, essential), lshw, udevadm and
# udevd (device properties, module loading), modprobe (kmod), a DHCP
# client; ca-certificates for requests' default bundle.
PACKAGES="python3 iproute2 isc-dhcp-client kmod udev lshw ca-certificates"
# Kernel modules the VMs need (virtio NIC and disk), with dependencies;
# everything else of the kernel's modules is left out.
MODULES="virtio_net virtio_blk virtio_pci af_packet"

log() { echo "build.sh: $*" >&2; }

mirror=${PXEFILTERD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' \
        /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}
                  $1 == "deb" && $2 ~ /^\[/ {print $3; exit}' \
        /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { log "no Debian mirror in the apt sources"; exit 1; }

uv=${UV:-$repo/.venv/bin/uv}
[ -x "$uv" ] || uv=$(command -v uv || true)
[ -n "$uv" ] || { log "uv not found (set UV=)"; exit 1; }
for tool in debootstrap cpio zstd dpkg-deb; do
    command -v "$tool" >/dev/null || { log "$tool not found"; exit 1; }
done

start=$(date +%s.%N)
work=$(mktemp -d /var/tmp/pxf-ramdisk.XXXXXX)
root=$work/root
cleanup() {
    # debootstrap mounts proc and sys in the root while it runs: unmount
    # whatever is left there before removing anything
    local mounts m
    mounts=$(findmnt -rn -o TARGET | grep "^$work/" | sort -r || true)
    for m in $mounts; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$work" || true
}
trap cleanup EXIT

log "debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include="${PACKAGES// /,}" \
    "$SUITE" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2; exit 1; }

# The kernel is unpacked, not installed: installing it would pull in an
# initramfs generator and build an initrd nobody uses.
log "kernel"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
image=$(chroot "$root" apt-cache depends linux-image-cloud-amd64 \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$image" ] || { log "no kernel package behind linux-image-cloud-amd64"; exit 1; }
chroot "$root" sh -c "cd /tmp && apt-get download -q $image" \
    > "$work/kernel-download.log" 2>&1 || {
    cat "$work/kernel-download.log" >&2; exit 1; }
mkdir "$work/kernel"
dpkg-deb -x "$root"/tmp/"$image"_*.deb "$work/kernel"
rm -f "$root"/tmp/*.deb
kver=$(ls "$work/kernel/lib/modules")
mkdir -p "$out.tmp"
cp "$work/kernel/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
# The root's own kmod resolves the modules' dependencies: all of them go
# in, depmod, keep what MODULES need, depmod again.
mkdir -p "$root/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$root/lib/modules/"
chroot "$root" depmod "$kver"
# shellcheck disable=SC2086  # one word per module
chroot "$root" modprobe -a -S "$kver" --show-depends $MODULES \
    | awk '$1 == "insmod" {print $2}' | sort -u > "$work/keep"
find "$root/lib/modules/$kver" -name '*.ko*' | while read -r ko; do
    grep -qxF "${ko#"$root"}" "$work/keep" || rm -f "$ko"
done
find "$root/lib/modules/$kver" -type d -empty -delete
chroot "$root" depmod "$kver"

log "ironic-python-agent from pins/ipa.txt"
site=$root/usr/local/lib/python3.11/dist-packages
"$uv" pip install --quiet --target "$site" --python-version 3.11 \
    --python-platform x86_64-manylinux_2_36 --only-binary :all: --no-deps \
    -r "$repo/pins/ipa.txt"
rm -rf "${site:?}/bin"
# Byte-compiled once here: under TCG, compiling at every import would cost
# more than the rest of the agent's start.
chroot "$root" python3 -m compileall -q -j 0 /usr/local/lib/python3.11 \
    >/dev/null

log "init and clean-up"
install -m 0755 "$here/init" "$root/init"
[ -e "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1
[ -e "$root/dev/null" ] || mknod -m 666 "$root/dev/null" c 1 3
echo ipa-ramdisk > "$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,linda} \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/tmp/* "$root"/var/cache/debconf/*-old

log "initramfs"
(cd "$root" && find . -xdev -print0 | LC_ALL=C sort -z \
    | cpio --null -o -H newc --quiet) | zstd -q -T0 -12 > "$out.tmp/initramfs"

end=$(date +%s.%N)
root_kib=$(du -sk --apparent-size "$root" | cut -f1)
cat > "$out.tmp/build.json" <<JSON
{"seconds": $(python3 -c "print(round($end - $start, 1))"),
 "kernel": "$kver",
 "root_bytes": $((root_kib * 1024)),
 "initramfs_bytes": $(stat -c %s "$out.tmp/initramfs"),
 "vmlinuz_bytes": $(stat -c %s "$out.tmp/vmlinuz"),
 "suite": "$SUITE",
 "packages": "$PACKAGES",
 "modules": "$MODULES"}
JSON
rm -rf "$out"
mv "$out.tmp" "$out"
log "done: $(tr -d '\n' < "$out/build.json")"
