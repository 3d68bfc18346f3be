"""``python -m dapi_config`` runs the command-line interface."""

from dapi_config.cli import main

if __name__ == "__main__":
    main()
