# Sourced by the scripts: make sure .venv exists and has zserve (editable) with its dev extra.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "scripts: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.zserve-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "scripts: installing zserve and its dev dependencies into .venv" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" >&2
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
