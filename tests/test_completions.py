"""The shell completions in completions/: up to date with the CLI, and working in real shells.

bash is exercised for real (source the script, fill COMP_WORDS, call the completion function);
zsh and fish get a syntax check plus a smoke test when they are installed, and are skipped
otherwise. A small synthetic Typer app covers what the zserve CLI does not use yet: nested
groups, hidden commands, Enum/Literal choices, Path values, variadic arguments.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen-completions"
COMPLETIONS = ROOT / "completions"
FILES = ("zserve.bash", "_zserve", "zserve.fish")

SYNTH_APP = '''
from enum import Enum
from pathlib import Path
from typing import Literal

import typer

app = typer.Typer(name="zserve", add_completion=False)
jobs = typer.Typer(help="Manage jobs.")
runs = typer.Typer(help="Runs of a job.")


class Capture(str, Enum):
    none = "none"
    metadata = "metadata"
    full = "full"
    sampled = "sampled"
    errors_only = "errors_only"


@app.command("start")
def start(
    capture_default: Capture = typer.Option(Capture.none, "--capture-default", help="Capture."),
    log_level: Literal["debug", "info", "warning"] = typer.Option("info", "--log-level"),
    config: Path = typer.Option(None, "--config", "-c", help="A config file."),
    out: Path = typer.Option(None, "--out", file_okay=False, help="An output directory."),
    point: tuple[int, int] = typer.Option((0, 0), "--point", help="Two numbers."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
    color: bool = typer.Option(True, "--color/--no-color"),
    secret: str = typer.Option("", "--secret", hidden=True),
) -> None:
    """Start [something]: it's 'quoted'."""


@runs.command("cancel")
def cancel(
    mode: Capture = typer.Argument(..., help="How."),
    files: list[Path] = typer.Argument(..., help="Which."),
) -> None:
    """Cancel runs."""


@runs.command("secret-cmd", hidden=True)
def secret_cmd() -> None:
    """Not offered."""


jobs.add_typer(runs, name="runs")
app.add_typer(jobs, name="jobs")
'''


def generate(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(GENERATOR), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Completions generated for SYNTH_APP; returns their directory."""
    base = tmp_path_factory.mktemp("synth")
    (base / "synth_app.py").write_text(SYNTH_APP)
    out = base / "out"
    result = generate("--app", "synth_app:app", "--out", str(out), pythonpath=base)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with a subdirectory and two files, for path completion."""
    (tmp_path / "src").mkdir()
    (tmp_path / "pipe.py").write_text("")
    (tmp_path / "params.json").write_text("{}")
    return tmp_path


def bash_complete(
    line: str,
    words: list[str] | None = None,
    script: Path = COMPLETIONS / "zserve.bash",
    cwd: Path | None = None,
) -> list[str]:
    """What bash completion offers with the cursor at the end of LINE.

    WORDS is COMP_WORDS when bash would split the line differently from whitespace
    (it also splits at COMP_WORDBREAKS characters such as `=` and `:`)."""
    if words is None:
        words = line.split() + ([""] if line.endswith(" ") else [])
    program = f"""
        source {shlex.quote(str(script))}
        complete -p zserve >/dev/null || exit 3
        COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={shlex.quote(line)}
        COMP_POINT={len(line)}
        _zserve zserve "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [w for w in result.stdout.splitlines() if w]


# --------------------------------------------------------------------------- generation


def test_checked_in_completions_are_up_to_date() -> None:
    result = generate("--check")
    assert result.returncode == 0, (
        "completions/ is stale for the current CLI: run scripts/gen-completions and commit "
        f"the result.\n{result.stderr}"
    )


def test_files_say_they_are_generated_and_how_to_install() -> None:
    install = {
        "zserve.bash": "source completions/zserve.bash",
        "_zserve": "$fpath",
        "zserve.fish": "~/.config/fish/completions/",
    }
    for name in FILES:
        head = "\n".join((COMPLETIONS / name).read_text().splitlines()[:10])
        assert "Generated by scripts/gen-completions" in head, name
        assert install[name] in head, name
    assert (COMPLETIONS / "_zserve").read_text().startswith("#compdef zserve\n")


def test_generation_is_deterministic_and_check_names_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert generate("--out", str(out)).returncode == 0
    for name in FILES:
        assert (out / name).read_text() == (COMPLETIONS / name).read_text(), name
    assert generate("--out", str(out), "--check").returncode == 0

    (out / "zserve.fish").write_text("# edited by hand\n")
    (out / "_zserve").unlink()
    result = generate("--out", str(out), "--check")
    assert result.returncode == 1
    assert "zserve.fish" in result.stderr and "_zserve" in result.stderr
    assert "zserve.bash" not in result.stderr
    assert "run scripts/gen-completions" in result.stderr
    assert not (out / "_zserve").exists(), "--check must not write"


# --------------------------------------------------------------------------- bash: zserve


def test_bash_completes_commands() -> None:
    top = bash_complete("zserve ")
    assert {"deploy", "deployments"} <= set(top)
    assert all(not w.startswith("-") for w in top), "options only after a dash"
    assert set(bash_complete("zserve dep")) == {"deploy", "deployments"}
    assert set(bash_complete("zserve deployments ")) >= {"list", "show", "delete"}
    assert bash_complete("zserve deployments sh") == ["show"]
    assert set(bash_complete("zserve --version dep")) == {"deploy", "deployments"}


def test_bash_completes_options() -> None:
    opts = bash_complete("zserve deploy --")
    assert {"--name", "--json", "--capture", "--app-dir", "--help"} <= set(opts)
    assert all(o.startswith("--") for o in opts)
    assert bash_complete("zserve deploy --j") == ["--json"]
    # the value of -n is skipped: still options of deploy afterwards
    assert "--json" in bash_complete("zserve deploy -n my-name --")
    assert "--json" in bash_complete("zserve deployments list --")
    assert {"--version", "-V"} <= set(bash_complete("zserve -"))
    # nothing after --: only positional arguments
    assert not [w for w in bash_complete("zserve deploy -- -") if w.startswith("--")]


def test_bash_free_text_values_complete_nothing_but_at_file(workdir: Path) -> None:
    assert bash_complete("zserve deploy --name ", cwd=workdir) == []
    assert bash_complete("zserve deployments list --name ", cwd=workdir) == []
    if "--params-json" in bash_complete("zserve run --", cwd=workdir):
        got = bash_complete("zserve run x --params-json @pa", cwd=workdir)
        assert got == ["@params.json"]


def test_bash_completes_paths(workdir: Path) -> None:
    assert bash_complete("zserve deploy --app-dir ", cwd=workdir) == ["src"]
    # --opt=value: bash splits at '=' and replaces only what follows it
    words = ["zserve", "deploy", "--app-dir", "=", "s"]
    assert bash_complete("zserve deploy --app-dir=s", words, cwd=workdir) == ["src/"]
    # the source argument may be a path/to/file.py:pipeline
    assert set(bash_complete("zserve deploy ", cwd=workdir)) == {"src", "pipe.py", "params.json"}
    assert bash_complete("zserve deploy pi", cwd=workdir) == ["pipe.py"]
    # once the source is given, only options are left
    assert "--json" in bash_complete("zserve deploy pkg.mod:pipe ", cwd=workdir)
    words = ["zserve", "deploy", "pkg.mod", ":", "pipe", ""]
    assert "--json" in bash_complete("zserve deploy pkg.mod:pipe ", words, cwd=workdir)


def test_bash_mid_line_cursor() -> None:
    program = f"""
        source {shlex.quote(str(COMPLETIONS / "zserve.bash"))}
        COMP_WORDS=(zserve dep --json) COMP_CWORD=1 COMP_LINE="zserve dep --json" COMP_POINT=10
        _zserve
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert set(out.split()) == {"deploy", "deployments"}


# --------------------------------------------------------------------------- bash: synthetic


def test_bash_synthetic_nested_groups_and_hidden_commands(synth: Path) -> None:
    script = synth / "zserve.bash"
    assert bash_complete("zserve ", script=script) == ["jobs", "start"]
    assert bash_complete("zserve jobs ", script=script) == ["runs"]
    assert bash_complete("zserve jobs runs ", script=script) == ["cancel"]
    assert bash_complete("zserve jobs runs s", script=script) == []
    opts = bash_complete("zserve start --", script=script)
    assert "--secret" not in opts
    assert {"--color", "--no-color", "--verbose", "--point", "--out"} <= set(opts)


def test_bash_synthetic_choices(synth: Path) -> None:
    script = synth / "zserve.bash"
    modes = ["none", "metadata", "full", "sampled", "errors_only"]
    assert bash_complete("zserve start --capture-default ", script=script) == modes
    assert bash_complete("zserve start --capture-default s", script=script) == ["sampled"]
    words = ["zserve", "start", "--capture-default", "=", "e"]
    got = bash_complete("zserve start --capture-default=e", words, script=script)
    assert got == ["errors_only"]
    assert bash_complete("zserve start --log-level ", script=script) == ["debug", "info", "warning"]
    assert bash_complete("zserve jobs runs cancel ", script=script) == modes
    # -v is a counter flag and -c takes a value: in -vc FILE, FILE is -c's value
    line = "zserve start -vc conf.toml --log-level "
    assert bash_complete(line, script=script) == ["debug", "info", "warning"]


def test_bash_synthetic_paths_and_nargs(synth: Path, workdir: Path) -> None:
    script = synth / "zserve.bash"
    files = {"src", "pipe.py", "params.json"}
    assert set(bash_complete("zserve start -c ", script=script, cwd=workdir)) == files
    assert bash_complete("zserve start --out ", script=script, cwd=workdir) == ["src"]
    assert bash_complete("zserve start --point 1 ", script=script) == []
    assert "--json" not in bash_complete("zserve start --point 1 2 --", script=script)
    assert "--color" in bash_complete("zserve start --point 1 2 --", script=script)
    assert set(bash_complete("zserve start -vc ", script=script, cwd=workdir)) == files
    # the variadic second argument: files, however many are given
    line = "zserve jobs runs cancel full a b "
    assert set(bash_complete(line, script=script, cwd=workdir)) == files


# --------------------------------------------------------------------------- zsh and fish


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_syntax_and_registration(synth: Path, tmp_path: Path) -> None:
    for directory in (COMPLETIONS, synth):
        script = directory / "_zserve"
        check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        program = (
            "autoload -U compinit && compinit -u -D && "
            f"source {shlex.quote(str(script))} && print -r -- $_comps[zserve] && "
            "whence -w __zserve__deploy _zserve"
        )
        env = {**os.environ, "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path)}
        result = subprocess.run(
            ["zsh", "-f", "-c", program], capture_output=True, text=True, env=env, timeout=30
        )
        assert result.stdout.splitlines()[0] == "_zserve", result.stderr
        assert "_zserve: function" in result.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_syntax_and_completion(synth: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }

    def fish_complete(script: Path, line: str) -> list[str]:
        program = f"source {shlex.quote(str(script))}; complete -C {shlex.quote(line)}"
        result = subprocess.run(
            ["fish", "--no-config", "-c", program],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    for directory in (COMPLETIONS, synth):
        script = directory / "zserve.fish"
        check = subprocess.run(
            ["fish", "--no-execute", str(script)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr

    script = COMPLETIONS / "zserve.fish"
    assert set(fish_complete(script, "zserve dep")) == {"deploy", "deployments"}
    assert set(fish_complete(script, "zserve deployments ")) >= {"list", "show", "delete"}
    assert {"--name", "--json"} <= set(fish_complete(script, "zserve deploy --"))
    assert "--json" in fish_complete(script, "zserve deploy -n x --")

    script = synth / "zserve.fish"
    modes = {"none", "metadata", "full", "sampled", "errors_only"}
    assert set(fish_complete(script, "zserve start --capture-default ")) == modes
    assert fish_complete(script, "zserve start --capture-default=f") == ["--capture-default=full"]
    assert fish_complete(script, "zserve jobs runs ") == ["cancel"]
    assert set(fish_complete(script, "zserve jobs runs cancel ")) == modes
