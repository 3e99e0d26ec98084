#!/usr/bin/env bash
# Builds the Debian package (cargo deb) and proves it on a fresh Debian 12 (docs/packaging.md):
#   1. lintian: no errors;
#   2. a new root from debootstrap (bookworm, minbase + systemd and procps, which any Debian 12
#      server has and the package depends on): dpkg -i installs it cleanly;
#      the binaries, unit, sysusers and tmpfiles entries, dictionaries, alert rules, dashboard
#      and docs are in place, /etc/ocfd/ocfd.toml is a conffile, the user ocfd exists, the unit
#      is enabled; systemd-analyze verify finds nothing wrong with the installed unit;
#   3. ocfd, run as ocfd with the packaged configuration (in a network namespace of its own),
#      answers /health and ocfctl; SIGTERM stops it cleanly;
#   4. dpkg -r keeps the conffile, dpkg -P removes it.
# The debootstrap tarball is kept in target/debian (made once: it needs deb.debian.org).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work="$root/target/debian"
mkdir -p "$work"
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
step() { echo "package-test: $*" >&2; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, unshare); run as root"
for t in lintian debootstrap unshare; do
    command -v "$t" >/dev/null || fail "needs $t (apt-get install lintian debootstrap util-linux)"
done
export PATH="$root/target/tools/bin:$PATH"
command -v cargo-deb >/dev/null ||
    fail "needs cargo-deb (cargo install cargo-deb --locked --root target/tools)"

step "building the package"
deb="$work/ocfd.deb"
cargo deb -p ocf --strip --output "$deb" >&2
dpkg-deb --info "$deb" >&2

step "lintian"
# Errors fail; warnings are shown.
lintian --fail-on error --display-level '>=warning' "$deb" >&2 || fail "lintian reports errors"

tarball="$work/bookworm-minbase-systemd-procps.tgz"
if [ ! -f "$tarball" ]; then
    step "debootstrap: fetching Debian 12 (once)"
    rm -rf "$work/bootstrap"
    debootstrap --variant=minbase --include=systemd,procps --make-tarball="$tarball.part" \
        bookworm "$work/bootstrap" http://deb.debian.org/debian >&2
    mv "$tarball.part" "$tarball"
    rm -rf "$work/bootstrap"
fi
fresh=$(mktemp -d "$work/root.XXXXXX")
chmod 0755 "$fresh" # a root directory every user may enter, as on a real system
cleanup() {
    umount "$fresh/proc" 2>/dev/null || true
    rm -rf "$fresh"
}
trap cleanup EXIT
step "debootstrap: a fresh Debian 12 root in $fresh"
debootstrap --variant=minbase --include=systemd,procps --unpack-tarball="$tarball" \
    bookworm "$fresh" http://deb.debian.org/debian >&2
grep -q '^12' "$fresh/etc/debian_version" || fail "the root is not Debian 12"
mount -t proc proc "$fresh/proc"
in_root() { chroot "$fresh" "$@"; }

step "dpkg -i"
cp "$deb" "$fresh/tmp/ocfd.deb"
in_root dpkg -i /tmp/ocfd.deb >&2 || fail "dpkg -i did not install cleanly"
[ "$(in_root dpkg-query -W -f='${Status}' ocfd)" = "install ok installed" ] ||
    fail "ocfd is not 'install ok installed'"
for f in /usr/bin/ocfd /usr/bin/ocfctl /usr/bin/ocf-loadtest; do
    [ -x "$fresh$f" ] || fail "$f missing"
done
unit=$(in_root dpkg -L ocfd | grep '/systemd/system/ocfd.service$') || fail "no unit in the package"
for f in /etc/ocfd/ocfd.toml /usr/lib/sysusers.d/ocfd.conf /usr/lib/tmpfiles.d/ocfd.conf \
    /usr/share/ocfd/dictionaries/3gpp-gy.xml /usr/share/ocfd/prometheus/ocfd-alerts.yml \
    /usr/share/ocfd/grafana/ocfd-dashboard.json /usr/share/doc/ocfd/README.md \
    /usr/share/doc/ocfd/copyright "$unit"; do
    [ -f "$fresh$f" ] || fail "$f missing"
done
in_root dpkg-query -W -f='${Conffiles}' ocfd | grep -q '/etc/ocfd/ocfd.toml' ||
    fail "/etc/ocfd/ocfd.toml is not a conffile"
in_root getent passwd ocfd >/dev/null || fail "no user ocfd"
[ "$(in_root stat -c %U /var/lib/ocfd)" = ocfd ] || fail "/var/lib/ocfd is not ocfd's"
[ -L "$fresh/etc/systemd/system/multi-user.target.wants/ocfd.service" ] ||
    fail "the unit is not enabled"

# The installed unit as systemd reads it: every command it names is there (ExecReload's
# /bin/kill comes from procps, a dependency).
in_root systemd-analyze verify "$unit" >&2 || fail "systemd-analyze verify $unit"

step "ocfd runs as ocfd with the packaged configuration"
# A network namespace of its own: the packaged listeners (127.0.0.1:3868, :8868) are free.
unshare --net -- bash -euo pipefail -c '
    fresh=$1
    ip link set lo up
    chroot "$fresh" setpriv --reuid=ocfd --regid=ocfd --init-groups \
        /usr/bin/ocfd --config /etc/ocfd/ocfd.toml --state-dir /var/lib/ocfd \
        >"$fresh/tmp/ocfd.log" 2>&1 &
    pid=$!
    # Bounded: up to 60 s for the listener (a first start makes the admin token).
    curl -sf --retry 60 --retry-delay 1 --retry-connrefused --max-time 90 \
        http://127.0.0.1:8868/health >/dev/null
    curl -sf http://127.0.0.1:8868/ready >&2
    chroot "$fresh" setpriv --reuid=ocfd --regid=ocfd --init-groups \
        /usr/bin/ocfctl --token-file /var/lib/ocfd/admin-token tenants >&2
    kill -TERM "$pid"
    wait "$pid"
' _ "$fresh" || { cat "$fresh/tmp/ocfd.log" >&2; fail "ocfd did not run from the package"; }

step "dpkg -r keeps the conffile; dpkg -P removes it"
in_root dpkg -r ocfd >&2
[ -f "$fresh/etc/ocfd/ocfd.toml" ] || fail "dpkg -r removed the conffile"
[ ! -e "$fresh/usr/bin/ocfd" ] || fail "dpkg -r left /usr/bin/ocfd"
in_root dpkg -P ocfd >&2
[ ! -e "$fresh/etc/ocfd/ocfd.toml" ] || fail "dpkg -P left the conffile"
step "passed"
