# A private PostgreSQL cluster for scripts/test.sh and scripts/bench.sh (sourced, not
# run): initdb into a temporary directory (as the postgres user when run as root), a free
# loopback port, no system service; stopped and removed by pg_cluster_stop.
#
#   pg_cluster_start PREFIX "SERVER OPTIONS"   sets pg_dir and pg_port, or fails
#   pg_cluster_stop                            stops it (fast, else immediate), removes it

pg_dir=""
pg_port=""

# The newest installed server's programs (Debian: /usr/lib/postgresql/N/bin), or nothing.
pg_bin() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 | xargs -r dirname
}

# Run a server program: as the postgres user when we are root (initdb refuses root).
pg_run() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A free TCP port on 127.0.0.1.
pg_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    return 1
}

pg_cluster_start() {
    local prefix=$1 opts=$2
    pg_dir=$(mktemp -d "/tmp/$prefix.XXXXXX")
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$pg_dir"; fi
    pg_port=$(pg_free_port)
    pg_run "$(pg_bin)/initdb" -D "$pg_dir/data" -U authd --auth=trust -E UTF8 --no-sync >/dev/null
    pg_run "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pg_dir $opts" \
        start >/dev/null
}

pg_cluster_stop() {
    if [ -n "$pg_dir" ]; then
        pg_run "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -t 30 stop >/dev/null 2>&1 \
            || pg_run "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$pg_dir"
        pg_dir=""
    fi
}
