#!/usr/bin/env bash
# build-cri-images.sh [OUTDIR]   (default OUTDIR: /opt/barge-test/cri/images)
#
# Builds, without any registry, look-alikes of every image that critest v1.31.1
# pulls (cri-tools pkg/validate and pkg/framework), plus the pause image that
# each containerd's CRI uses as sandbox image.  They are made from the static
# busybox 1.36.1 that install.sh puts in /opt/barge-test/cri/bin (its applets
# are hard links, as in the official busybox image, so that masking /bin/ls
# masks ls and not busybox), and from two small static C programs (pause, nnp)
# compiled here.  Output:
#   OUTDIR/oci/         one OCI layout, one tag per image (the busybox layer is
#                       shared); layers and configs are reproducible (fixed
#                       mtimes and created dates), so a rebuild gives the same IDs
#   OUTDIR/images.list  "<reference as critest names it> OUTDIR/oci:<tag>", one line
#                       per reference; push-cri-images.sh pushes them all
#   OUTDIR/hosts.list   every registry host in images.list, one a line
#
# Rebuilt only when images.list is missing or older than this script or busybox.
# BARGE_CRI_BUSYBOX names another static busybox.
set -euo pipefail

OUT=${1:-/opt/barge-test/cri/images}
BB=${BARGE_CRI_BUSYBOX:-/opt/barge-test/cri/bin/busybox}
LIST=$OUT/images.list
if [ -s "$LIST" ] && [ -s "$OUT/hosts.list" ] && [ -d "$OUT/oci" ] && [ "$LIST" -nt "$0" ] && [ "$LIST" -nt "$BB" ]; then
  echo "$LIST is up to date"; exit 0
fi
for t in umoci gcc tar; do
  command -v "$t" >/dev/null || { echo "build-cri-images.sh: needs $t (run install.sh)" >&2; exit 1; }
done
[ -x "$BB" ] || { echo "build-cri-images.sh: $BB is missing (run install.sh)" >&2; exit 1; }
! ldd "$BB" >/dev/null 2>&1 || { echo "build-cri-images.sh: $BB is not static" >&2; exit 1; }

start=$(date +%s%N)
umask 022
mkdir -p "$OUT"
W=$(mktemp -d "$OUT/.build.XXXXXX"); trap 'rm -rf "$W"' EXIT
L=$W/oci
CREATED=2024-01-01T00:00:00Z   # fixed: same content, same image ID
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# ---- helpers ----------------------------------------------------------------
layer() {  # layer DIR OUT.tar: a reproducible layer of DIR's contents (hard links kept)
  local entries; entries=$(cd "$1" && ls -A)
  # shellcheck disable=SC2086
  tar -C "$1" --format=gnu --sort=name --mtime="$CREATED" --numeric-owner -cf "$2" $entries
}
add_layer() {  # add_layer FROM_TAG NEW_TAG DIR WHAT: NEW_TAG = FROM_TAG + a layer of DIR
  layer "$3" "$W/$2.tar"
  umoci raw add-layer --image "$L:$1" --tag "$2" \
    --history.created "$CREATED" --history.created_by "build-cri-images.sh: $4" "$W/$2.tar"
  rm -f "$W/$2.tar"
}
config() {  # config TAG [umoci config flags...]
  local tag=$1; shift
  umoci config --image "$L:$tag" --no-history --created "$CREATED" "$@"
}
passwd_files() {  # passwd_files ROOTFS: /etc/passwd and /etc/group of the official busybox image
  cat >"$1/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
  cat >"$1/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
}

# ---- static helpers: pause and nnp ------------------------------------------
cat >"$W/pause.c" <<'EOF'
/* Sandbox (pause) look-alike: holds the pod's namespaces, reaps the zombies
 * of a shared PID namespace, and exits 0 on SIGINT or SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv) {
	struct sigaction sa;
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (barge test image)");
		return 0;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	for (;;)
		pause();
}
EOF
cat >"$W/nnp.c" <<'EOF'
/* Installed setuid root: prints the effective uid, which is 0 only when
 * exec could raise privileges (no_new_privs not set). */
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
EOF
for p in pause nnp; do
  gcc -static -Os -s -Wall -Werror -o "$W/$p" "$W/$p.c"
done

# ---- busybox base rootfs ----------------------------------------------------
R=$W/base
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home,tmp,var/tmp,var/www,var/spool/mail,dev,proc,sys}
chmod 1777 "$R/tmp" "$R/var/tmp"; chmod 700 "$R/root"
install -m 0755 "$BB" "$R/bin/busybox"
n=0
for a in $("$BB" --list-full); do
  [ "$a" = bin/busybox ] && continue
  ln "$R/bin/busybox" "$R/$a"; n=$((n + 1))
done
passwd_files "$R"
chown 8:8 "$R/var/spool/mail"; chown 33:33 "$R/var/www"

umoci init --layout "$L"
umoci new --image "$L:busybox"
config busybox --os linux --architecture amd64 --config.env "$PATH_ENV" --config.cmd sh
add_layer busybox busybox "$R" "busybox 1.36.1, $n applets as hard links"

# ---- images on top of busybox -----------------------------------------------
# derive TAG [flags...]: TAG = busybox with another config (and an ID of its own)
derive() { local tag=$1; shift; umoci config --image "$L:busybox" --tag "$tag" --no-history --created "$CREATED" "$@"; }
# file_image TAG FILE: busybox + an empty /FILE, as cri-tools' images/image-test does
file_image() {
  local d=$W/l-$1; mkdir -p "$d"; : >"$d/$2"
  add_layer busybox "$1" "$d" "add /$2"
}

# Image Manager specs: each name its own image; test-image-tags:1/2/3 one image.
for t in test-image-latest test-image-tag-test test-image-tag-all test-image-1 test-image-2 test-image-3 test-image-tags; do
  file_image "$t" "$t"
done
# "image status ... Uid|Username": the image's USER as uid, name, uid:gid, name:group.
derive user-uid --config.user 1002
derive user-username --config.user www-data
derive user-uid-group --config.user 1003:1003
derive user-username-group --config.user www-data:www-data

# SupplementalGroupsPolicy: default-user (1000:1000) is also in group-defined-in-image (50000).
d=$W/l-predefined; mkdir -p "$d/etc" "$d/home/default-user"
passwd_files "$d"
echo 'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh' >>"$d/etc/passwd"
printf 'default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' >>"$d/etc/group"
chown 1000:1000 "$d/home/default-user"
add_layer busybox predefined-group "$d" "default-user 1000 in group-defined-in-image 50000"
config predefined-group --config.user 1000

# NoNewPrivs: /usr/local/bin/nnp, setuid root, as the entrypoint.
d=$W/l-nnp; mkdir -p "$d/usr/local/bin"
install -m 4755 "$W/nnp" "$d/usr/local/bin/nnp"
add_layer busybox nonewprivs "$d" "setuid-root /usr/local/bin/nnp"
config nonewprivs --clear=config.cmd --config.entrypoint /usr/local/bin/nnp

# nginx look-alike: busybox httpd serves the root of conf.d/default.conf on its
# listen port.  Like nginx's master, the serving process is named nginx (comm),
# has "master process" on its command line (the ContainerPID/PodPID specs grep
# /proc/1/cmdline) and writes /var/run/nginx.pid (the HostPID spec compares it
# with `pidof nginx` from another container).
d=$W/l-nginx; mkdir -p "$d/usr/sbin" "$d/etc/nginx/conf.d" "$d/usr/share/nginx/html" "$d/var/run" "$d/var/log/nginx" "$d/var/cache/nginx"
cat >"$d/usr/sbin/nginx" <<'EOF'
#!/bin/sh
# nginx look-alike (barge CRI test image): busybox httpd serves the `root` of
# /etc/nginx/conf.d/default.conf on its `listen` port, in the foreground.
# This process stays "nginx" (its comm), shows "nginx: master process" in its
# command line, writes /var/run/nginx.pid, and stops on TERM, INT or QUIT.
case "$1" in
  "nginx: master process"*) ;;
  -v|-V) echo "nginx version: nginx/1.14.2 (look-alike: busybox httpd)" >&2; exit 0 ;;
  *) exec /usr/sbin/nginx "nginx: master process nginx $*" ;;
esac
conf=/etc/nginx/conf.d/default.conf
port=$(sed -n 's/^[[:space:]]*listen[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$conf" | head -n 1)
root=$(sed -n 's/^[[:space:]]*root[[:space:]]*\([^;]*\);.*/\1/p' "$conf" | head -n 1)
mkdir -p /var/run /var/log/nginx
worker=
trap '[ -n "$worker" ] && kill "$worker" 2>/dev/null; rm -f /var/run/nginx.pid; exit 0' TERM INT QUIT
httpd -f -p "${port:-80}" -h "${root:-/usr/share/nginx/html}" &
worker=$!
echo $$ >/var/run/nginx.pid
wait "$worker"
EOF
chmod 0755 "$d/usr/sbin/nginx"
cat >"$d/etc/nginx/nginx.conf" <<'EOF'
# Read by the look-alike only for documentation: /usr/sbin/nginx takes the
# port and root from conf.d/default.conf.
pid /var/run/nginx.pid;
http { include /etc/nginx/conf.d/*.conf; }
EOF
printf 'server {\n    listen 80;\n    root /usr/share/nginx/html;\n}\n' >"$d/etc/nginx/conf.d/default.conf"
cat >"$d/usr/share/nginx/html/index.html" <<'EOF'
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>A look-alike of nginx (busybox httpd), for the barge CRI tests.</p>
</body>
</html>
EOF
add_layer busybox nginx "$d" "nginx look-alike on busybox httpd"
config nginx --config.env NGINX_VERSION=1.14.2 --clear=config.cmd --config.cmd nginx --config.cmd "-g" --config.cmd "daemon off;" \
  --config.exposedports 80/tcp --config.stopsignal SIGTERM
# hostnet-nginx: the same nginx on 12003, the port critest's streaming spec expects.
d=$W/l-hostnet; mkdir -p "$d/etc/nginx/conf.d"
printf 'server {\n    listen 12003;\n    root /usr/share/nginx/html;\n}\n' >"$d/etc/nginx/conf.d/default.conf"
add_layer nginx hostnet-nginx "$d" "nginx look-alike listening on 12003"
config hostnet-nginx --clear=config.exposedports --config.exposedports 12003/tcp

# httpd look-alike: busybox httpd on port 80; logs Apache's "httpd -D FOREGROUND"
# (the multi-container log spec looks for it), stops on SIGWINCH like Apache.
d=$W/l-httpd; mkdir -p "$d/usr/local/apache2/bin" "$d/usr/local/apache2/htdocs" "$d/usr/local/apache2/logs"
cat >"$d/usr/local/apache2/bin/httpd-foreground" <<'EOF'
#!/bin/sh
# httpd look-alike (barge CRI test image): busybox httpd serves
# /usr/local/apache2/htdocs on port 80 in the foreground; stops on WINCH, TERM or INT.
rm -f /usr/local/apache2/logs/httpd.pid
# Apache logs its command line at start; critest's multi-container log spec
# looks for it.
echo "[mpm_event:notice] AH00489: Apache/2.4.39 look-alike (busybox httpd) configured -- resuming normal operations" >&2
echo "[core:notice] AH00094: Command line: 'httpd -D FOREGROUND'" >&2
child=
trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' WINCH TERM INT
httpd -f -p 80 -h /usr/local/apache2/htdocs &
child=$!
echo $$ >/usr/local/apache2/logs/httpd.pid
wait "$child"
EOF
chmod 0755 "$d/usr/local/apache2/bin/httpd-foreground"
echo '<html><body><h1>It works!</h1></body></html>' >"$d/usr/local/apache2/htdocs/index.html"
add_layer busybox httpd "$d" "httpd look-alike on busybox httpd"
config httpd --config.env HTTPD_PREFIX=/usr/local/apache2 --config.env HTTPD_VERSION=2.4.39 \
  --config.env PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.workingdir /usr/local/apache2 --clear=config.cmd --config.cmd httpd-foreground \
  --config.exposedports 80/tcp --config.stopsignal SIGWINCH

# ---- pause: /pause alone, from scratch --------------------------------------
d=$W/l-pause; mkdir -p "$d"
install -m 0755 "$W/pause" "$d/pause"
umoci new --image "$L:pause"
config pause --os linux --architecture amd64 --config.env "$PATH_ENV" --config.entrypoint /pause --config.user 65535:65535
add_layer pause pause "$d" "pause look-alike"

umoci gc --layout "$L"

# ---- lists --------------------------------------------------------------------
# Every reference critest v1.31.1 uses (pkg/validate/consts.go, security_context_linux.go,
# multi_container_linux.go, pkg/framework/util.go) and each containerd's default
# sandbox image (`containerd config default`: 1.6 pause:3.6, 1.7 3.8, 2.1 3.10,
# 2.3 3.10.2).  Not here: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...,
# a pinned upstream manifest digest that no build can reproduce.
K8S=registry.k8s.io
E2E=$K8S/e2e-test-images
CRI=gcr.io/k8s-staging-cri-tools
{
  echo "$E2E/busybox:1.29-2 busybox"
  echo "$E2E/nginx:1.14-2 nginx"
  echo "$E2E/httpd:2.4.39-4 httpd"
  echo "$E2E/nonewprivs:1.3 nonewprivs"
  for v in 3.6 3.8 3.9 3.10 3.10.1 3.10.2; do echo "$K8S/pause:$v pause"; done
  echo "$CRI/hostnet-nginx-amd64:latest hostnet-nginx"
  echo "$CRI/test-image-latest:latest test-image-latest"
  echo "$CRI/test-image-tag:test test-image-tag-test"
  echo "$CRI/test-image-tag:all test-image-tag-all"
  for i in 1 2 3; do echo "$CRI/test-image-$i:latest test-image-$i"; done
  for i in 1 2 3; do echo "$CRI/test-image-tags:$i test-image-tags"; done
  echo "$CRI/test-image-user-uid:latest user-uid"
  echo "$CRI/test-image-user-username:latest user-username"
  echo "$CRI/test-image-user-uid-group:latest user-uid-group"
  echo "$CRI/test-image-user-username-group:latest user-username-group"
  echo "$CRI/test-image-predefined-group:latest predefined-group"
} | while read -r ref tag; do echo "$ref $OUT/oci:$tag"; done >"$W/images.list"
cut -d/ -f1 "$W/images.list" | sort -u >"$W/hosts.list"

# Every listed tag exists.
for tag in $(awk '{print $2}' "$W/images.list" | sed 's/.*://' | sort -u); do
  umoci stat --image "$L:$tag" >/dev/null
done

rm -rf "$OUT/oci.old"
[ ! -e "$OUT/oci" ] || mv "$OUT/oci" "$OUT/oci.old"
mv "$L" "$OUT/oci"
rm -rf "$OUT/oci.old"
mv "$W/hosts.list" "$OUT/hosts.list"
mv "$W/images.list" "$LIST"   # last: its mtime says the build is complete
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "built $(wc -l <"$LIST") references ($(umoci ls --layout "$OUT/oci" | wc -l) images, $(du -sh "$OUT/oci" | cut -f1)) in $OUT in ${ms} ms"
