"""``dapi-config encrypt``, ``decrypt`` and ``rekey``: whole-file encryption of the state (§11).

Keys are read from environment variables (or stdin), never from the command line, where any
user could read them in ``ps``. Stop every process using the state file first: the commands
refuse while another process has it open.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dapi_config.cli._common import JsonOpt, app, cli_context, fail, print_json, working
from dapi_config.cli._output import stderr
from dapi_config.errors import ConfigError, DapiConfigError
from dapi_config.store import encrypt_file
from dapi_config.store.sqlcipher import ENV_KEY, ENV_MODE, SQLCIPHER, StateCipher

DEFAULT_NEW_KEY_ENV = "API_STATE_NEW_KEY"


def _state_path() -> Path:
    return cli_context().state_file()


def _key_from_env(name: str) -> str:
    secret = cli_context().settings.named_secret(name)
    if not secret:
        raise ConfigError(f"{name} is not set: put the state key (at least 16 characters) there")
    StateCipher.from_secret(secret, source=name)  # checks the length, naming the variable
    return secret


def _key_from_stdin() -> str:
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise ConfigError("no key on standard input")
    StateCipher.from_secret(secret, source="standard input")
    return secret


def _report(result: encrypt_file.ConversionResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    total = sum(result.rows.values())
    print(
        f"{result.operation}: {result.state_path} converted and verified "
        f"({len(result.rows)} tables, {total} rows, revision {result.revision})"
    )
    print(f"backup of the previous file: {result.backup.path}")
    if result.after is not None:
        print(f"backup of the converted file: {result.after.path}")


def _note(message: str) -> None:
    stderr.print(f"note: {message}", markup=False, highlight=False)


@app.command()
def encrypt(as_json: JsonOpt = False) -> None:
    """Encrypt the plain state file in place with the key in API_STATE_KEY (SQLCipher).

    Needs the extra dapi-config[encryption]. Takes a backup first, builds and verifies an
    encrypted copy, then swaps it in atomically. Stop the service first.
    Example: API_STATE_KEY=... dapi-config encrypt
    """
    state = _state_path()
    try:
        with working(f"encrypting {state}"):
            result = encrypt_file.encrypt_state(state, _key_from_env(ENV_KEY))
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    _report(result, as_json)
    _note(
        f"start every dapi-config process with {ENV_MODE}={SQLCIPHER} and the same {ENV_KEY}. "
        f"{result.backup.path} and any older backups in {result.backup.path.parent} are NOT "
        "encrypted: delete them once you no longer need them"
    )


@app.command()
def decrypt(as_json: JsonOpt = False) -> None:
    """Turn the encrypted state file back into a plain SQLite file (key in API_STATE_KEY).

    Takes a backup first, builds and verifies a plain copy, then swaps it in atomically.
    Stop the service first. Example: API_STATE_KEY=... dapi-config decrypt
    """
    state = _state_path()
    try:
        with working(f"decrypting {state}"):
            result = encrypt_file.decrypt_state(state, _key_from_env(ENV_KEY))
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    _report(result, as_json)
    _note(f"unset {ENV_MODE} for every dapi-config process using this file")


@app.command()
def rekey(
    new_key_env: Annotated[
        str,
        typer.Option(
            "--new-key-env",
            metavar="VAR",
            help="Environment variable holding the new key.",
        ),
    ] = DEFAULT_NEW_KEY_ENV,
    new_key_stdin: Annotated[
        bool, typer.Option("--new-key-stdin", help="Read the new key from the first stdin line.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt the state file under a new key (never pass a key as an argument).

    \b
    The current key:  API_STATE_KEY
    The new key:      --new-key-env VAR (default API_STATE_NEW_KEY) or --new-key-stdin

    Takes a backup first, builds and verifies a copy under the new key, then swaps it in.
    Backups made before keep the old key. Stop the service first.
    Example: API_STATE_KEY=old API_STATE_NEW_KEY=new dapi-config rekey
    """
    state = _state_path()
    try:
        old = _key_from_env(ENV_KEY)
        new = _key_from_stdin() if new_key_stdin else _key_from_env(new_key_env)
        with working(f"re-keying {state}"):
            result = encrypt_file.rekey_state(state, old, new)
    except DapiConfigError as exc:
        raise fail(str(exc)) from None
    _report(result, as_json)
    _note(
        f"set {ENV_KEY} to the new key for every dapi-config process; backups made before "
        "this need the old key"
    )
