#!/bin/sh
# Quality of the recommended policy on real programs no one here wrote: Debian's nginx, redis-server
# and memcached binaries, driven by their real clients (curl, redis-cli, nc) from outside the
# workload. For each server:
#
#  1. training: `stance launch --workload W -- SERVER` under observation, a client session of real
#     requests, SIGTERM; the daemon stores the graph;
#  2. `stance mode W enforce` loads the latest recommended policy; its rule counts per domain are
#     printed as `quality: SERVER process=N file=N network=N capabilities=N`;
#  3. a second normal run with other pages / keys than the training run succeeds completely, the
#     server stops cleanly, and none of W's deny events was made by the server's executables;
#  4. attacker-like actions inside the same workload each fail with EPERM and are stored as deny
#     events: spawning a shell (through `stance launch` and from a process already inside),
#     reading /etc/shadow, writing into the server binary's directory, connecting to an unusual
#     port. As a control, the same process reads a file the policy allows.
#
# Needs (stance-vmtest --file ... --lib-from-ldd): /usr/sbin/nginx, /etc/nginx/mime.types,
# /usr/bin/redis-server, /usr/bin/redis-cli, /usr/bin/memcached, /usr/bin/curl.
#
# Redis saves by writing temp-<pid>.rdb and renaming it over dump.rdb. The temporary name is random
# at any pid length (a one-level write rule on /var/lib/redis), and the rename is observed as a
# write to both names, so the enforced run's SAVE and its save at SIGTERM are allowed, also when
# this scenario runs alone in a fresh VM with small pids.
#
# One daemon start, three servers with two runs each and some sixty client and CLI calls under
# software emulation.
# vmtest-timeout: 420
. /scenarios/lib/flow.sh
. /scenarios/lib/servers.sh

DB=/tmp/real.db
rm -f "$DB" "$DB"-*
for b in /usr/sbin/nginx /usr/bin/redis-server /usr/bin/redis-cli /usr/bin/memcached /usr/bin/curl; do
    [ -x "$b" ] || fail "$b is not in the guest (pass --file $b)"
done
[ -f /etc/nginx/mime.types ] || fail "/etc/nginx/mime.types is not in the guest (pass --file)"

# The accounts the servers drop to, and a shadow file worth stealing.
cat >/etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >/etc/group <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF
echo 'root:$y$j9T$stance$notarealhashnotarealhashnotarealhash:20000:0:99999:7:::' >/etc/shadow
chmod 640 /etc/shadow

start_daemon

# ---------------------------------------------------------------- nginx
# (Bodies not indented: their multi-line strings are compared as they are.)
server_nginx() {
echo "== nginx"
W=nginx
mkdir -p /var/www/html /var/log/nginx /var/lib/nginx /run
cat >/etc/nginx/nginx.conf <<'EOF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log /var/log/nginx/access.log;
    server {
        listen 127.0.0.1:80;
        root /var/www/html;
        index index.html;
    }
}
EOF
# A small static site: the index and eleven pages. Training visits two thirds of them, the second
# run the rest.
echo "<h1>index</h1>" >/var/www/html/index.html
for n in 01 02 03 04 05 06 07 08 09 10 11; do echo "<p>page $n</p>" >/var/www/html/p$n.html; done

# get PATH WANT: curl from outside the workload; status WANT, and for 200 the file's content.
get() {
    code=$(curl -s -o /tmp/real-body -w '%{http_code}' "http://127.0.0.1$1")
    [ "$code" = "$2" ] || { finding "nginx: GET $1: HTTP $code, expected $2"; return; }
    if [ "$2" = 200 ]; then
        f=/var/www/html$1
        [ "${1%/}" = "$1" ] || f=${f}index.html
        cmp -s /tmp/real-body "$f" || finding "nginx: GET $1: not the content of $f"
    fi
}
nginx_session() {
    before=$FINDINGS
    for p in "$@"; do
        case $p in
            */missing*) get "$p" 404 ;;
            *) get "$p" 200 ;;
        esac
    done
    [ "$FINDINGS" = "$before" ] && ok "nginx served $#: $*"
}

server_start $W /tmp/real-nginx.log /usr/sbin/nginx -g 'daemon off;'
await_ready "$LAUNCH_PID" 60 nginx curl -sf -o /dev/null http://127.0.0.1/
nginx_session / /p01.html /p02.html /p03.html /p04.html /p05.html /p06.html /p07.html \
    /index.html /missing.html /p01.html
server_stop nginx /tmp/real-nginx.log
wait_stored $W /var/www/html/p07.html /usr/sbin/nginx

mode $W enforce
quality nginx $W

server_start $W /tmp/real-nginx.log /usr/sbin/nginx -g 'daemon off;'
await_ready "$LAUNCH_PID" 60 nginx curl -sf -o /dev/null http://127.0.0.1/
nginx_session /p08.html /p09.html /p10.html /p11.html / /index.html /missing-too.html /p08.html

attacks $W /etc/nginx/nginx.conf /usr/sbin
nginx_session /p09.html /
server_stop nginx /tmp/real-nginx.log

attack_denies $W /usr/sbin
wait_stored $W /var/www/html/p11.html
no_denies_by $W /usr/sbin/nginx
events $W deny | sed 's/^/    deny: /'
}

# ---------------------------------------------------------------- redis
server_redis() {
echo "== redis"
W=redis
mkdir -p /etc/redis /var/lib/redis /var/log/redis /run/redis
cat >/etc/redis/redis.conf <<'EOF'
bind 127.0.0.1
port 6379
daemonize no
pidfile /run/redis/redis-server.pid
logfile /var/log/redis/redis-server.log
dir /var/lib/redis
dbfilename dump.rdb
save 3600 1
appendonly no
EOF

# rcli LINES WANT: the commands (one a line) through one redis-cli; the replies must be WANT.
rcli() {
    got=$(printf '%s\n' "$1" | redis-cli 2>&1)
    [ "$got" = "$2" ] || finding "redis-cli: expected
$2
got
$got"
}

# Data from before training: a server that has been running has a dump to load.
redis-server /etc/redis/redis.conf >/tmp/real-redis0.log 2>&1 &
r0=$!
HELPER_PIDS="$HELPER_PIDS $r0"
await_ready $r0 60 "redis (set-up, outside any workload)" redis-cli ping
rcli "SET seed:1 old
SAVE" "OK
OK"
kill -TERM $r0
wait $r0 || fail "the set-up redis exited with $? on SIGTERM"
[ -s /var/lib/redis/dump.rdb ] || fail "the set-up redis left no dump"

before=$FINDINGS
server_start $W /tmp/real-redis.log /usr/bin/redis-server /etc/redis/redis.conf
await_ready "$LAUNCH_PID" 60 redis redis-cli ping
rcli "GET seed:1
SET user:1 alice
SET user:2 bob
GET user:1
INCR visits
INCR visits
LPUSH queue a b
LRANGE queue 0 -1
HSET session:1 user alice
HGET session:1 user
EXPIRE user:2 600
DBSIZE
SAVE" "old
OK
OK
alice
1
2
2
b
a
1
alice
1
6
OK"
[ "$FINDINGS" = "$before" ] && ok "redis: training session"
server_stop redis /tmp/real-redis.log
wait_stored $W /var/lib/redis/dump.rdb /usr/bin/redis-server

mode $W enforce
quality redis $W

before=$FINDINGS
server_start $W /tmp/real-redis.log /usr/bin/redis-server /etc/redis/redis.conf
await_ready "$LAUNCH_PID" 60 redis redis-cli ping
rcli "GET user:1
SET order:7 pending
SADD tags x y z
SCARD tags
INCR visits
HSET cart:9 item pen
HGETALL cart:9
DEL user:2
DBSIZE
SAVE" "alice
OK
3
3
3
1
item
pen
1
8
OK"
[ "$FINDINGS" = "$before" ] && ok "redis: second session (other keys)"

attacks $W /etc/redis/redis.conf /usr/bin
rcli "GET order:7" "pending"
# Redis saves on SIGTERM: the dump is written under enforcement too.
server_stop redis /tmp/real-redis.log
grep -q "DB saved on disk" /var/log/redis/redis-server.log ||
    finding "redis did not save on shutdown"

attack_denies $W /usr/bin
wait_stored $W /usr/bin/redis-server
no_denies_by $W /usr/bin/redis-server
events $W deny | sed 's/^/    deny: /'
}

# ---------------------------------------------------------------- memcached
server_memcached() {
echo "== memcached"
W=memcached
# mc LINES WANT: the protocol lines through nc; the replies (CRs dropped) must be WANT.
mc() {
    got=$(printf '%s\nquit\n' "$1" | sed 's/$/\r/' | nc -w 5 127.0.0.1 11211 | tr -d '\r')
    [ "$got" = "$2" ] || finding "memcached: expected
$2
got
$got"
}
MEMCACHED="/usr/bin/memcached -u nobody -l 127.0.0.1 -p 11211 -m 16 -t 2"
# shellcheck disable=SC2086 # MEMCACHED is a command line on purpose
before=$FINDINGS
server_start $W /tmp/real-memcached.log $MEMCACHED
await_ready "$LAUNCH_PID" 60 memcached sh -c 'printf "version\r\n" | nc -w 2 127.0.0.1 11211 | grep -q VERSION'
mc "set a 0 0 5
hello
get a
incr n 1
add n 0 0 1
7
incr n 1
delete a" "STORED
VALUE a 0 5
hello
END
NOT_FOUND
STORED
8
DELETED"
[ "$FINDINGS" = "$before" ] && ok "memcached: training session"
server_stop memcached /tmp/real-memcached.log
wait_stored $W /usr/bin/memcached

mode $W enforce
quality memcached $W

# shellcheck disable=SC2086
before=$FINDINGS
server_start $W /tmp/real-memcached.log $MEMCACHED
await_ready "$LAUNCH_PID" 60 memcached sh -c 'printf "version\r\n" | nc -w 2 127.0.0.1 11211 | grep -q VERSION'
mc "set b 0 0 3
abc
append b 0 0 2
de
get b
get a
incr n 5
delete b" "STORED
STORED
VALUE b 0 5
abcde
END
END
NOT_FOUND
DELETED"
[ "$FINDINGS" = "$before" ] && ok "memcached: second session (other keys)"
attacks $W /etc/passwd /usr/bin
mc "set c 0 0 1
z
get c" "STORED
VALUE c 0 1
z
END"
server_stop memcached /tmp/real-memcached.log
attack_denies $W /usr/bin
wait_stored $W /usr/bin/memcached
no_denies_by $W /usr/bin/memcached
events $W deny | sed 's/^/    deny: /'
}

# REAL_SERVERS (--env) picks some of them, for a quicker look at one.
for s in ${REAL_SERVERS:-nginx redis memcached}; do
    "server_$s"
done

cleanup_servers
for w in nginx redis memcached; do rmdir "$CG/$w" 2>/dev/null; done
rmdir "$CG" 2>/dev/null
rm -f /etc/shadow /tmp/attack.fifo
finish_findings
echo "ok: scenario done"
