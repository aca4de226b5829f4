# Source me (bash or zsh):  . ./env.sh
# Activates the venv made by `make setup` and points ROS 2 (PyPI wheels, rclpy + Fast DDS) at it,
# plus the tf2_msgs fallback in ros2_ws/install when scripts/setup.sh built one.
# VENV=/path overrides the venv (default: <repo>/.venv).
if [ -n "${BASH_SOURCE:-}" ]; then _vloc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
elif [ -n "${ZSH_VERSION:-}" ]; then _vloc_root="$(cd "$(dirname "${(%):-%x}")" && pwd)"
else _vloc_root="$(pwd)"; fi
_vloc_venv="${VENV:-$_vloc_root/.venv}"
case "$_vloc_venv" in /*) ;; *) _vloc_venv="$_vloc_root/$_vloc_venv" ;; esac

if [ ! -f "$_vloc_venv/bin/activate" ]; then
    echo "env.sh: no venv at $_vloc_venv; run 'make setup' first" >&2
else
    # shellcheck disable=SC1091
    . "$_vloc_venv/bin/activate"
    _vloc_prepend() {  # _vloc_prepend VAR DIR: put DIR first in the colon list VAR, once
        eval "_vloc_cur=\"\${$1:-}\""
        case ":$_vloc_cur:" in *":$2:"*) ;; *) eval "export $1=\"$2\${_vloc_cur:+:\$_vloc_cur}\"" ;; esac
    }
    # The wheels install ROS's share/, include/ and lib/ under the venv prefix.
    _vloc_prepend AMENT_PREFIX_PATH "$_vloc_venv"
    _vloc_prepend CMAKE_PREFIX_PATH "$_vloc_venv"
    # The tf2_msgs fallback, unless a real tf2_msgs is on AMENT_PREFIX_PATH (a sourced ROS install).
    _vloc_tf2="$_vloc_root/ros2_ws/install/tf2_msgs"
    _vloc_real_tf2=""
    _vloc_ifs="$IFS"; IFS=:
    for _vloc_p in $AMENT_PREFIX_PATH; do
        if [ "$_vloc_p" != "$_vloc_tf2" ] && [ -f "$_vloc_p/share/tf2_msgs/package.xml" ]; then _vloc_real_tf2="$_vloc_p"; fi
    done
    IFS="$_vloc_ifs"
    if [ -z "$_vloc_real_tf2" ] && [ -d "$_vloc_tf2/lib/python3.11/site-packages" ]; then
        _vloc_prepend AMENT_PREFIX_PATH "$_vloc_tf2"
        _vloc_prepend CMAKE_PREFIX_PATH "$_vloc_tf2"
        _vloc_prepend PYTHONPATH "$_vloc_tf2/lib/python3.11/site-packages"
        _vloc_prepend LD_LIBRARY_PATH "$_vloc_tf2/lib"
    fi
    export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
    # Discovery on this host only unless the caller says otherwise (a robot sets its own).
    export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
    # pyrender renders offscreen through EGL (Mesa), no display needed.
    export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
    export VLOC_ROOT="$_vloc_root"
    unset -f _vloc_prepend
    unset _vloc_cur _vloc_tf2 _vloc_real_tf2 _vloc_ifs _vloc_p
fi
unset _vloc_root _vloc_venv
