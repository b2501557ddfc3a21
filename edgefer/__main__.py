"""``python -m edgefer``: the same CLI as the ``edgefer`` script (used on remote devices)."""

from edgefer.cli import main

if __name__ == "__main__":
    main(prog_name="edgefer")
