# Sourced by the scripts: install_packages PKG... installs the Debian packages
# that are missing (as root), or says exactly what to install and exits.
install_packages() {
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "note: not a Debian system; make sure these are installed: $*"
    return 0
  fi
  local missing=() p
  for p in "$@"; do
    # An npm bundled with another nodejs build is as good as Debian's package.
    [[ "$p" == npm ]] && command -v npm >/dev/null 2>&1 && continue
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "== installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
}
