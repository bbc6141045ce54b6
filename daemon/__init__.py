"""The pystream system service: `pystreamd` (daemon/pystreamd.py) and its systemd unit."""
