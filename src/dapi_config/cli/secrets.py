"""``dapi-config secrets seal``: secrets out of the YAML file, into sealed state."""

from __future__ import annotations

from dapi_config.cli._common import JsonOpt, open_manager, print_json, secrets_app
from dapi_config.cli._output import stdout


@secrets_app.command("seal")
def seal(as_json: JsonOpt = False) -> None:
    """Move ml_node_key_config.worker_private (with its public key) and chain_node.KeyringPassword
    from the config file into the state file, sealed under the master key.

    The config file is backed up first (<config>.pre-seal.<UTC time>, 0600; it holds the
    secrets, delete it once you have checked), then rewritten without them, every comment kept.
    `dapi-config rollback` writes them back for the old binary. Safe to run again.
    Example: dapi-config --config config.yaml secrets seal
    """
    with open_manager() as cm:
        report = cm.seal_secrets()
    if as_json:
        print_json(report.as_dict())
        return
    if not report.sealed:
        stdout.print(f"{report.config_path}: no secrets in the file; nothing to do", markup=False)
        return
    stdout.print(
        f"{report.config_path}: sealed {', '.join(report.sealed)}; backup {report.backup_path}",
        markup=False,
    )
