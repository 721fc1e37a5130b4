# Shared by scripts/test and scripts/demo: a virtualenv with the project installed.
# ensure_venv DIR PYTHON NAMES [pip requirement...]: the project, editable, with NAMES, a
# comma-separated list of pyproject.toml's extras (scripts/demo: "server") and dependency
# groups (scripts/test: "test", the checkers and test tools, which are never published as
# extras; pip >= 25.1 installs a group with --group), and the requirements.
# pip runs only when pyproject.toml, the arguments or $ENSURE_VENV_REFRESH changed since the
# last install into DIR: a stamp file per combination, named after their hash. Each install
# upgrades every dependency to its newest release within pyproject.toml's bounds (eager), so a
# caller that sets ENSURE_VENV_REFRESH to the date (scripts/test) tests the newest releases of
# the day.
ensure_venv() {
    local dir="$1" python="$2" names="$3"
    shift 3
    if [ ! -x "$dir/bin/python" ]; then
        "$python" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
    fi
    local key
    key="$("$dir/bin/python" -c 'import hashlib, sys
digest = hashlib.sha256(open("pyproject.toml", "rb").read())
digest.update("\0".join(sys.argv[1:]).encode())
print(digest.hexdigest()[:16])' "${ENSURE_VENV_REFRESH:-}" "$names" "$@")"
    if [ ! -e "$dir/.installed-$key" ]; then
        local targets
        # "-e .[extra,...]" then "--group NAME" for each name that is a dependency group.
        mapfile -t targets < <("$dir/bin/python" -c 'import sys, tomllib
groups = tomllib.load(open("pyproject.toml", "rb")).get("dependency-groups", {})
names = [name for name in sys.argv[1].split(",") if name]
extras = ",".join(name for name in names if name not in groups)
print("-e", f".[{extras}]" if extras else ".", sep="\n")
for name in names:
    if name in groups:
        print(f"--group\n{name}")' "$names")
        if [[ " ${targets[*]} " == *" --group "* ]]; then
            # A venv made before pip 25.1 would not know --group.
            "$dir/bin/python" -m pip install -q "pip>=25.1"
        fi
        "$dir/bin/python" -m pip install -q --upgrade --upgrade-strategy eager "${targets[@]}" "$@"
        touch "$dir/.installed-$key"
    fi
}

# need_command CMD DEBIAN_PACKAGE: install the package with apt-get when possible, else fail
# with a message that names what is missing.
need_command() {
    local cmd="$1" package="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $package (for $cmd)"
        if [ -z "${APT_UPDATED:-}" ]; then
            apt-get update -qq && APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    fi
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "error: '$cmd' is missing: install the Debian package '$package' (apt-get install $package)" >&2
        exit 1
    fi
}

# A Python 3.12+ for the newest Django, if this machine has one (pyenv or PATH). pyenv shims
# on PATH answer "command not found" for versions that are not selected: try each one.
newer_python() {
    local candidate
    for candidate in "$HOME"/.pyenv/versions/3.13*/bin/python "$HOME"/.pyenv/versions/3.12*/bin/python python3.13 python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}
