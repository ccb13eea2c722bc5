# Sourced by scripts/test and scripts/matrix: make sure the services the suite
# uses are up. PostgreSQL and Redis on 127.0.0.1 are started when they are not
# running, and installed first (Debian's packages) when they are missing and we
# are root on Debian. A suite pointed elsewhere (CUSTOMERSYNC_TEST_DATABASE_URL,
# CUSTOMERSYNC_TEST_REDIS_URL) is left alone.

_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_wait_for() { # port, name
    for _ in $(seq 1 60); do
        _listening "$1" && return 0
        sleep 0.5
    done
    echo "$2 did not start listening on 127.0.0.1:$1." >&2
    return 1
}

_can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

_apt_install() {
    echo "Installing Debian's $* for the test suite..."
    if [ -z "${_CUSTOMERSYNC_APT_UPDATED:-}" ]; then
        apt-get update -qq
        _CUSTOMERSYNC_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

_missing() { # what, what to do instead
    echo "The test suite needs $1 and cannot start or install it here (not root on Debian): $2." >&2
    exit 1
}

ensure_postgres() {
    [ -n "${CUSTOMERSYNC_TEST_DATABASE_URL:-}" ] && return 0
    _listening 5432 && return 0
    local installed=""
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        _can_install || _missing "PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)" \
            "start one, or set CUSTOMERSYNC_TEST_DATABASE_URL (e.g. postgres://user:pw@host/db, or sqlite:///path)"
        _apt_install postgresql
        installed=1
    fi
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    if [ -n "$installed" ]; then
        # A new cluster asks for passwords on TCP; the suite connects as postgres
        # without one, as on the machines it is developed on (loopback only).
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        { printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n'; cat "$hba"; } >"$hba.new"
        mv "$hba.new" "$hba"
        chown postgres:postgres "$hba"
    fi
    echo "Starting PostgreSQL $version..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true # its package may have started it
    [ -n "$installed" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    _wait_for 5432 PostgreSQL
}

ensure_redis() {
    [ -n "${CUSTOMERSYNC_TEST_REDIS_URL:-}" ] && return 0
    _listening 6379 && return 0
    if ! command -v redis-server >/dev/null; then
        _can_install || _missing "Redis on 127.0.0.1:6379" "start one, or set CUSTOMERSYNC_TEST_REDIS_URL (e.g. redis://host:6379/15)"
        _apt_install redis-server
        _listening 6379 && return 0 # its package may have started it
    fi
    echo "Starting Redis..."
    # Keeps nothing on disk: the suite's data is throwaway.
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile /tmp/customersync-test-redis.log
    _wait_for 6379 Redis
}

ensure_chromium() {
    # The browser tests drive Debian's Chromium; Playwright never downloads its own.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    [ -x "${CUSTOMERSYNC_TEST_CHROMIUM:-/usr/bin/chromium}" ] && return 0
    _can_install || _missing "Chromium for the browser tests" \
        "install Debian's chromium package (or set CUSTOMERSYNC_TEST_CHROMIUM to a Chromium binary)"
    _apt_install chromium
}

ensure_services() {
    ensure_postgres
    ensure_redis
    ensure_chromium
}
