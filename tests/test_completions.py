"""The shell completions in completions/: Typer's scripts, up to date, and working in real shells.

The scripts hold no command tree: at each TAB they run `zserve` with _ZSERVE_COMPLETE set and the
CLI answers (zserve/cli/_completion.py). So every test here goes through the venv's `zserve` entry
point, first on PATH, with the working tree first on PYTHONPATH: bash for real (the completion
function called with COMP_WORDS, and an interactive bash on a pseudo-terminal pressing TAB), zsh
on a pseudo-terminal (the script sourced, and autoloaded from $fpath) and fish (`complete -C`),
the last two skipped when they are not installed.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zserve.cli._completion import COMPLETE_VAR, FILES, render

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen-completions"
COMPLETIONS = ROOT / "completions"
BASH_SCRIPT = COMPLETIONS / FILES["bash"]
ZSH_SCRIPT = COMPLETIONS / FILES["zsh"]
FISH_SCRIPT = COMPLETIONS / FILES["fish"]
VENV_BIN = Path(sys.executable).parent

CAPTURE_MODES = ["none", "metadata", "full", "sampled", "errors_only"]
JOB_STATUSES = ["queued", "running", "completed", "failed", "cancelled"]
# what completion must never load: it runs at every TAB
HEAVY = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "httpx", "zserve.server"}


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GENERATOR), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the shells run in: the venv's `zserve` first on PATH (running the
    working tree), and a throwaway HOME so no user's shell configuration gets in."""
    if not (VENV_BIN / "zserve").is_file():
        pytest.fail(f"no zserve entry point in {VENV_BIN}: pip install -e . in the venv")
    home = tmp_path_factory.mktemp("home")
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "_ZSERVE", "_TYPER"))
    }
    return {
        **environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "ZDOTDIR": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "TERM": "dumb",
        "PS1": "$ ",
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with only a subdirectory and a file, for the file-name fallback."""
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "pipe.py").write_text("")
    return work


def bash_complete(
    env: dict[str, str], line: str, words: list[str] | None = None, cword: int | None = None
) -> list[str]:
    """COMPREPLY of completions/zserve.bash with the cursor at the end of LINE (or in word CWORD).

    WORDS is COMP_WORDS when bash would split the line differently from whitespace
    (it also splits at COMP_WORDBREAKS characters such as `=`)."""
    if words is None:
        words = line.split() + ([""] if line.endswith(" ") else [])
    program = f"""
        source {shlex.quote(str(BASH_SCRIPT))}
        spec="$(complete -p zserve)"
        [[ $spec == "complete -o default -F _zserve_completion zserve" ]] || exit 3
        COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
        COMP_CWORD={len(words) - 1 if cword is None else cword}
        COMP_LINE={shlex.quote(line)}
        COMP_POINT={len(line)}
        _zserve_completion zserve "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [w for w in result.stdout.splitlines() if w]


def tab_in_terminal(argv: list[str], setup: str, typed: str, env: dict[str, str], cwd: Path) -> str:
    """Start the interactive shell ARGV on a pseudo-terminal, run SETUP, type TYPED (with its
    TABs), and return the command line as it then stands."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(follower)
    seen = b""

    def wait_for(pattern: bytes, timeout: float = 30) -> re.Match[bytes]:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the shell is gone
                    break
                seen += chunk
                if match := re.search(pattern, seen):
                    return match
        raise AssertionError(f"no {pattern!r} from {argv[0]}; it showed:\n{seen.decode()}")

    try:
        os.write(leader, f"{setup}\necho READY\n".encode())
        wait_for(rb"\nREADY")
        # the shell completes the TABs before it reads what follows: then go to the start of the
        # line, turn it into `echo "BUF:<line>"` and run that
        os.write(leader, f'{typed}\x01echo "BUF:\x05"\n'.encode())
        return wait_for(rb"\nBUF:([^\r\n]*)\r?\n").group(1).decode()
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)


# --------------------------------------------------------------------------- generation


def test_checked_in_completions_are_up_to_date() -> None:
    result = generate("--check")
    assert result.returncode == 0, (
        "completions/ is stale: run scripts/gen-completions and commit the result.\n"
        f"{result.stderr}"
    )


def test_generation_is_deterministic_and_check_names_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert generate("--out", str(out)).returncode == 0
    for name in FILES.values():
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


def test_files_are_typers_scripts_and_say_how_to_install(env: dict[str, str]) -> None:
    install = {
        "bash": "source completions/zserve.bash",
        "zsh": "$fpath",
        "fish": "fish/completions",
    }
    for shell, name in FILES.items():
        text = (COMPLETIONS / name).read_text()
        head = "\n".join(text.splitlines()[:8])
        assert "Generated by scripts/gen-completions" in head, name
        assert install[shell] in head, name
        assert text == render(shell), name
        # no command tree inside: the CLI answers at each TAB
        assert "deployments" not in text and "--capture" not in text, name
        assert f"{COMPLETE_VAR}=complete_{shell}" in text, name
        # what `zserve --show-completion` (and --install-completion) gives is shipped as it is
        shown = subprocess.run(
            ["zserve", "--show-completion", shell],
            capture_output=True,
            text=True,
            env={**env, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        first, _, rest = shown.stdout.strip().partition("\n")
        assert text.startswith(first + "\n") or f"\n{first}\n" in text, name
        assert rest.strip() in text, name
    assert ZSH_SCRIPT.read_text().startswith("#compdef zserve\n")


def test_help_offers_completion_install(env: dict[str, str]) -> None:
    result = subprocess.run(
        ["zserve", "--help"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


# --------------------------------------------------------------------------- the protocol


def test_completion_loads_no_server_or_database_code(env: dict[str, str]) -> None:
    probe = textwrap.dedent(
        """
        import atexit, json, sys
        atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
        sys.argv = ["zserve"]
        from zserve.cli import main
        main()
        """
    )
    completing = {
        COMPLETE_VAR: "complete_bash",
        "COMP_WORDS": "zserve invoke --",
        "COMP_CWORD": "2",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, **completing},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "--param" in result.stdout.split()
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    loaded |= {name.split(".")[0] for name in loaded}
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_autocompletion_callbacks_are_answered(env: dict[str, str]) -> None:
    """What dynamic completion of names and ids will build on: a parameter's autocompletion=
    callback answers through the zserve app (its group class and completion wiring)."""
    probe = textwrap.dedent(
        """
        import sys
        import typer
        from zserve.cli import app, main

        def names(incomplete: str) -> list[tuple[str, str]]:
            return [("weather", "a deployment"), ("wordcount", "another")]

        @app.command("probe")
        def probe(ref: str = typer.Argument(..., autocompletion=names)) -> None:
            pass

        sys.argv = ["zserve"]
        main()
        """
    )
    for shell, completing, expected in [
        ("bash", {"COMP_WORDS": "zserve probe w", "COMP_CWORD": "2"}, "weather\nwordcount"),
        ("zsh", {"_TYPER_COMPLETE_ARGS": "zserve probe we"}, '"weather":"a deployment"'),
        (
            "fish",
            {"_TYPER_COMPLETE_ARGS": "zserve probe wo", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
            "wordcount\tanother",
        ),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env={**env, COMPLETE_VAR: f"complete_{shell}", **completing},
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout, (shell, result.stdout)


# --------------------------------------------------------------------------- bash


def test_bash_completes_commands(env: dict[str, str]) -> None:
    import typer
    from typer.core import TyperGroup

    from zserve.cli import app

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    assert set(bash_complete(env, "zserve ")) == set(root.commands)
    assert bash_complete(env, "zserve jo") == ["jobs"]
    assert set(bash_complete(env, "zserve dep")) == {"deploy", "deployments"}
    assert bash_complete(env, "zserve jobs ") == ["list", "show", "cancel"]
    assert bash_complete(env, "zserve deployments sh") == ["show"]
    assert set(bash_complete(env, "zserve --version dep")) == {"deploy", "deployments"}
    # the cursor in the middle of the line: only the words before it count
    words = ["zserve", "dep", "--json"]
    assert set(bash_complete(env, "zserve dep --json", words, cword=1)) == {
        "deploy",
        "deployments",
    }


def test_bash_completes_options(env: dict[str, str]) -> None:
    assert bash_complete(env, "zserve start --cap") == ["--capture-default"]
    opts = bash_complete(env, "zserve invoke --")
    assert {"--param", "--params-json", "--capture", "--async", "--json", "--help"} <= set(opts)
    assert all(o.startswith("--") for o in opts)
    # the value of --name is skipped: still options of deploy afterwards
    assert "--json" in bash_complete(env, "zserve deploy --name my-name --")
    assert {"--version", "--install-completion", "--help"} <= set(bash_complete(env, "zserve -"))


def test_bash_completes_choices(env: dict[str, str]) -> None:
    assert bash_complete(env, "zserve start --capture-default ") == CAPTURE_MODES
    assert bash_complete(env, "zserve start --capture-default s") == ["sampled"]
    # --opt=value: bash splits at '=' into its own word
    words = ["zserve", "start", "--capture-default", "="]
    assert bash_complete(env, "zserve start --capture-default=", words) == CAPTURE_MODES
    assert bash_complete(env, "zserve invoke --capture m") == ["metadata"]
    assert bash_complete(env, "zserve jobs list --status ") == JOB_STATUSES


def test_bash_free_text_offers_nothing_so_bash_completes_file_names(env: dict[str, str]) -> None:
    # `complete -o default` (checked by bash_complete): no candidates means file names
    assert bash_complete(env, "zserve deploy --name ") == []
    assert bash_complete(env, "zserve deploy ") == []
    assert bash_complete(env, "zserve deploy --app-dir ") == []


def test_bash_interactive_tab(env: dict[str, str], workdir: Path) -> None:
    def tab(typed: str) -> str:
        setup = f"source {shlex.quote(str(BASH_SCRIPT))}"
        return tab_in_terminal(["bash", "--norc", "--noprofile", "-i"], setup, typed, env, workdir)

    assert tab("zserve jo\t") == "zserve jobs "
    assert tab("zserve jobs sh\t") == "zserve jobs show "
    assert tab("zserve start --cap\t") == "zserve start --capture-default "
    assert tab("zserve start --capture-default sa\t") == "zserve start --capture-default sampled "
    # nothing to offer: bash's own file-name completion
    assert tab("zserve deploy --app-dir s\t") == "zserve deploy --app-dir src/"
    assert tab("zserve deploy pi\t") == "zserve deploy pipe.py "


# --------------------------------------------------------------------------- zsh


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
@pytest.mark.parametrize("install", ["source", "fpath"])
def test_zsh_interactive_tab(
    install: str, env: dict[str, str], workdir: Path, tmp_path: Path
) -> None:
    check = subprocess.run(["zsh", "-n", str(ZSH_SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    if install == "source":
        setup = f"autoload -Uz compinit && compinit -u -D && source {shlex.quote(str(ZSH_SCRIPT))}"
    else:
        # the file alone in a directory of $fpath: compinit autoloads it at the first TAB
        functions = tmp_path / "zfunc"
        functions.mkdir()
        shutil.copy(ZSH_SCRIPT, functions / "_zserve")
        setup = (
            f"fpath=({shlex.quote(str(functions))} $fpath); autoload -Uz compinit; compinit -u -D"
        )

    def tab(typed: str) -> str:
        # zsh drops the space (or slash) it added after a completed word once the cursor moves
        return tab_in_terminal(["zsh", "-f", "-i"], setup, typed, env, workdir).rstrip(" /")

    # each call is a new shell: with fpath, the first TAB is the one that loads the script
    assert tab("zserve jo\t") == "zserve jobs"
    assert tab("zserve jobs sh\t") == "zserve jobs show"
    assert tab("zserve start --cap\t") == "zserve start --capture-default"
    assert tab("zserve start --capture-default sa\t") == "zserve start --capture-default sampled"
    # ambiguous: the common prefix
    assert tab("zserve invoke --para\t") == "zserve invoke --param"
    # nothing to offer: file names
    assert tab("zserve deploy --app-dir s\t") == "zserve deploy --app-dir src"
    assert tab("zserve deploy pi\t") == "zserve deploy pipe.py"


# --------------------------------------------------------------------------- fish


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
@pytest.mark.parametrize("install", ["source", "completions-dir"])
def test_fish_completes(install: str, env: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    check = subprocess.run(["fish", "--no-execute", str(FISH_SCRIPT)], capture_output=True)
    assert check.returncode == 0, check.stderr
    if install == "source":
        setup = f"source {shlex.quote(str(FISH_SCRIPT))}"
    else:
        # where fish autoloads a command's completions from on its first use
        completions = tmp_path / "fish-completions"
        completions.mkdir()
        shutil.copy(FISH_SCRIPT, completions / "zserve.fish")
        setup = f"set -g fish_complete_path {shlex.quote(str(completions))}"

    def complete(line: str) -> list[str]:
        program = f"{setup}; complete -C {shlex.quote(line)}"
        result = subprocess.run(
            ["fish", "--no-config", "-c", program],
            capture_output=True,
            text=True,
            env=env,
            cwd=workdir,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    assert complete("zserve jo") == ["jobs"]
    assert set(complete("zserve jobs ")) == {"list", "show", "cancel"}
    assert complete("zserve start --cap") == ["--capture-default"]
    assert set(complete("zserve start --capture-default ")) == set(CAPTURE_MODES)
    assert "--param" in complete("zserve invoke --")
    assert "--json" in complete("zserve deploy -n x --")
    # nothing to offer: file names
    assert set(complete("zserve deploy --app-dir ")) == {"src/", "pipe.py"}


# --------------------------------------------------------------------------- names and ids

#: Every parameter that completes names or ids, as COMP_WORDS up to its value.
DYNAMIC = [
    "zserve jobs show ",
    "zserve jobs cancel ",
    "zserve stream ",
    "zserve logs ",
    "zserve stop ",
    "zserve invoke --server ",
    "zserve invoke --deployment ",
    "zserve start --deployment ",
    "zserve deployments show ",
    "zserve deployments delete ",
    "zserve run ",
    "zserve runs list --deployment ",
    "zserve bench --start ",
]


def test_names_and_ids_complete_to_nothing_without_a_server_or_store(
    env: dict[str, str], tmp_path: Path
) -> None:
    """No server running, no store, and a ZSERVE_URL nothing answers at: every dynamic
    completion answers nothing (bash then offers file names), at once, without an error."""
    empty = {**env, "ZSERVE_HOME": str(tmp_path / "nothing-here")}
    for line in DYNAMIC:
        assert bash_complete(empty, line) == [], line
    unreachable = {**empty, "ZSERVE_URL": "http://127.0.0.1:9"}
    for line in ("zserve jobs show ", "zserve stream ab"):
        assert bash_complete(unreachable, line) == [], line
    broken = tmp_path / "broken"
    (broken / "servers").mkdir(parents=True)
    (broken / "servers" / "x.json").write_text("{not json")
    (broken / "zserve.db").write_text("not a database")
    for line in DYNAMIC:
        assert bash_complete({**env, "ZSERVE_HOME": str(broken)}, line) == [], line


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_readme_one_liners_print_the_shipped_script(env: dict[str, str], shell: str) -> None:
    """README's per-shell one-liners (`_ZSERVE_COMPLETE=source_SHELL zserve`) print the same
    script as completions/ ships, less its header."""
    readme = (ROOT / "README.md").read_text()
    assert f"_ZSERVE_COMPLETE=source_{shell} zserve" in readme
    result = subprocess.run(
        ["zserve"], capture_output=True, text=True, timeout=30,
        env={**env, COMPLETE_VAR: f"source_{shell}"},
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    shipped = (COMPLETIONS / FILES[shell]).read_text()
    body = [line for line in result.stdout.strip().splitlines() if line.strip()]
    assert body and all(line in shipped for line in body)
