#!/usr/bin/env bash
# Installs everything kongish-pdk needs to run, test and benchmark on a fresh Debian/Ubuntu
# machine: the Debian packages of the real-gateway tests (nginx with the Lua module, Kong's own
# msgpack library), a venv in .venv with the package (all extras) and the test tools, and the
# incumbent kong-pdk 0.36 in its own venv for the side-by-side benchmarks (bench/).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-venv: "python3 -m venv" below needs it on stock Debian
DEBIAN_PACKAGES=(python3-venv nginx libnginx-mod-http-lua lua-messagepack lua-cjson wrk curl)

if command -v apt-get >/dev/null; then
    missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        sudo_cmd=()
        [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
        echo "installing Debian packages: ${missing[*]}"
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    echo "warning: no apt-get; install ${DEBIAN_PACKAGES[*]} yourself for the gateway tests" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,test]"

# kong-pdk 0.36 in .cache/kong-pdk-0.36, for the benches that compare with it.
.venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); \
from support.incumbent import kong_pdk_venv; print('incumbent ready in', kong_pdk_venv())"
echo "installed: .venv/bin/kongish-pluginserver"
