#!/usr/bin/env bash
# Runs the SCTP tests (tests/sctp.rs, the #[ignore]d ones) inside a qemu guest booting Debian's
# stock kernel with the sctp module, because the host kernel may have no SCTP.
#
# Steps: build the test binary statically; fetch and unpack the current linux-image-*-amd64
# package; make an initramfs with busybox, the test binary and the sctp modules; boot it under
# qemu (TCG); the guest's init runs the tests, prints a result line and powers off.
# Work files go to target/sctp-vm (kept between runs; delete it to refetch the kernel).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/sctp-vm"
mkdir -p "$work"
cd "$root"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || [ ! -x /bin/busybox ] || ! need cpio; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "sctp-vm-test: installing qemu-system-x86 busybox-static cpio" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 busybox-static cpio >/dev/null
    else
        echo "sctp-vm-test: FAILED: needs qemu-system-x86_64, busybox-static and cpio (apt-get install qemu-system-x86 busybox-static cpio)" >&2
        exit 1
    fi
fi

# 1. The kernel: Debian's stock amd64 kernel package, unpacked (no install).
kdir="$work/kernel"
if [ ! -f "$kdir/vmlinuz" ]; then
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    echo "sctp-vm-test: fetching $pkg" >&2
    (cd "$kdir/deb" && apt-get -o APT::Sandbox::User=root download "$pkg" >/dev/null)
    dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
    cp "$kdir"/root/boot/vmlinuz-* "$kdir/vmlinuz"
fi
moddir=$(ls -d "$kdir"/root/lib/modules/*/kernel)

# 2. The test binary, statically linked so the guest needs no libraries.
echo "sctp-vm-test: building the static test binary" >&2
bin=$(RUSTFLAGS='-C target-feature=+crt-static' cargo test --test sctp --no-run \
    --target x86_64-unknown-linux-gnu --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "sctp":
        print(m["executable"])')
[ -x "$bin" ] || { echo "sctp-vm-test: FAILED: no test binary built" >&2; exit 1; }

# 3. The initramfs.
ird="$work/initramfs"
rm -rf "$ird" && mkdir -p "$ird"/{bin,proc,sys,dev,tmp,modules}
cp /bin/busybox "$ird/bin/busybox"
# Without its debug information (most of a debug build's size): the guest unpacks the
# initramfs into its memory.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$ird/sctp-test" "$bin"
else
    cp "$bin" "$ird/sctp-test"
fi
mods="crypto/crc32c_generic.ko lib/libcrc32c.ko net/ipv4/udp_tunnel.ko net/ipv6/ip6_udp_tunnel.ko net/sctp/sctp.ko"
for m in $mods; do
    if [ -f "$moddir/$m" ]; then cp "$moddir/$m" "$ird/modules/"; fi
done
cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in crc32c_generic libcrc32c udp_tunnel ip6_udp_tunnel sctp; do
    [ -f /modules/$m.ko ] && insmod /modules/$m.ko
done
ip link set lo up
ip addr add 127.0.0.2/8 dev lo
export TMPDIR=/tmp
/sctp-test --ignored --test-threads=1
echo "SCTP-VM-RESULT: $?"
poweroff -f
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initramfs.gz")

# 4. Boot (bounded), read the result line.
echo "sctp-vm-test: booting $(basename "$(ls "$kdir"/root/boot/vmlinuz-*)") under qemu" >&2
log="$work/console.log"
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$kdir/vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 quiet panic=-1" >"$log" 2>&1 || true
grep -E "^(test |running|test result)" "$log" || true
if grep -q "SCTP-VM-RESULT: 0" "$log" && grep -q "test result: ok. [1-9]" "$log"; then
    echo "sctp-vm-test: passed"
else
    echo "sctp-vm-test: FAILED; guest console:" >&2
    tail -n 60 "$log" >&2
    exit 1
fi
